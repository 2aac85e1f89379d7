"""Small fakes shared by the search-loop tests (ENAS and NAO)."""

from wpl_keras.nas.base import SearchSpace


class FakeSpace(SearchSpace):
    """Three decisions of three choices each; ``"a-b-c"`` strings."""

    def __init__(self, name: str = "fake"):
        self.name = name

    @property
    def decision_sizes(self):
        return (3, 3, 3)

    @property
    def decision_names(self):
        return ("a", "b", "c")

    def to_string(self, arch):
        return "-".join(str(a) for a in self.validate(arch))

    def from_string(self, text):
        return self.validate([int(t) for t in text.split("-")])
