"""The ENAS recurrent-cell search space (Pham et al. 2018, §2.1; the WPL paper's RNN search).

A cell has ``num_nodes`` nodes. Node 0 reads the input ``x_t`` and the previous hidden state
``h_{t-1}``; each node ``i >= 1`` reads ONE earlier node ``j < i``. Every node applies one
activation from ``(tanh, relu, identity, sigmoid)`` inside a highway gate (see
:mod:`wpl_keras.nas.spaces.rnn.supernet`). The cell output ``h_t`` is the average of the *loose ends*,
the nodes that no other node reads.

An architecture is the tuple of controller decisions, in the order ENAS emits them::

    (act_0, input_1, act_1, input_2, act_2, ..., input_{N-1}, act_{N-1})

with ``act_i ∈ [0, 4)`` and ``input_i ∈ [0, i)``, i.e. ``1 + 2 (N − 1)`` decisions.

The readable form is ``"n0=tanh n1=relu(n0) n2=identity(n0) ..."``.

>>> space = RNNCellSpace(num_nodes=3)
>>> space.decision_sizes
(4, 1, 4, 2, 4)
>>> space.to_string((0, 0, 1, 0, 3))
'n0=tanh n1=relu(n0) n2=sigmoid(n0)'
"""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple

from wpl_keras.nas.base import (
    Architecture,
    InvalidArchitectureError,
    SearchSpace,
    check_size,
    strict_int,
)

ACTIVATIONS: Tuple[str, ...] = ("tanh", "relu", "identity", "sigmoid")

# Node numbers are written in ASCII digits without leading zeros, as to_string writes them.
_NODE_RE = re.compile(r"^n(0|[1-9][0-9]*)=([a-z]+)(?:\(n(0|[1-9][0-9]*)\))?$")


def pair_index(node: int, source: int) -> int:
    """Row of the node-to-node matrix for edge ``source → node`` (``0 <= source < node``).

    Pairs are numbered ``node (node − 1) / 2 + source``: (1,0)→0, (2,0)→1, (2,1)→2, ...

    Raises:
        InvalidArchitectureError: (a ``ValueError``) for a non-integer or disallowed edge.
    """
    node, source = strict_int(node, "pair_index node"), strict_int(source, "pair_index source")
    if not 0 <= source < node:
        raise InvalidArchitectureError(
            f"edge {source} -> {node} is not allowed (need 0 <= source < node)."
        )
    return node * (node - 1) // 2 + source


class RNNCellSpace(SearchSpace):
    """ENAS recurrent cells with ``num_nodes`` nodes (paper: 12).

    Args:
        num_nodes: number of nodes ``N >= 2`` (node 0 included); an int (a NumPy integer is
            accepted, a bool, float or string is not).

    Raises:
        InvalidSpaceError: (a ``ValueError``) for any other ``num_nodes``.
    """

    name = "enas_rnn"
    activations = ACTIVATIONS

    def __init__(self, num_nodes: int = 12):
        self.num_nodes = check_size(num_nodes, "RNNCellSpace num_nodes", 2)

    # ------------------------------------------------------------ decisions
    @property
    def decision_sizes(self) -> Tuple[int, ...]:
        sizes = [len(ACTIVATIONS)]
        for i in range(1, self.num_nodes):
            sizes += [i, len(ACTIVATIONS)]
        return tuple(sizes)

    @property
    def decision_names(self) -> Tuple[str, ...]:
        names = ["node0_activation"]
        for i in range(1, self.num_nodes):
            names += [f"node{i}_input", f"node{i}_activation"]
        return tuple(names)

    @property
    def num_pairs(self) -> int:
        """Number of (node, input) pairs, each with its own shared matrix: ``N (N − 1) / 2``."""
        return self.num_nodes * (self.num_nodes - 1) // 2

    # ------------------------------------------------------------- reading
    def activation_ids(self, arch: Sequence[int]) -> Tuple[int, ...]:
        """Activation id of every node, ``(act_0, ..., act_{N-1})``."""
        arch = self.validate(arch)
        return (arch[0],) + tuple(arch[2::2])

    def inputs(self, arch: Sequence[int]) -> Tuple[int, ...]:
        """Input node of nodes ``1 .. N-1``."""
        arch = self.validate(arch)
        return tuple(arch[1::2])

    def loose_ends(self, arch: Sequence[int]) -> Tuple[int, ...]:
        """Nodes that no later node reads; the cell output is their average."""
        used = set(self.inputs(arch))
        return tuple(i for i in range(self.num_nodes) if i not in used)

    def edge_rows(self, arch: Sequence[int]) -> Tuple[int, ...]:
        """Rows (see :func:`pair_index`) of the node matrices ``arch`` uses, node 1 first."""
        return tuple(pair_index(i + 1, j) for i, j in enumerate(self.inputs(arch)))

    # ------------------------------------------------------------- strings
    def to_string(self, arch: Sequence[int]) -> str:
        acts = self.activation_ids(arch)
        parts = [f"n0={ACTIVATIONS[acts[0]]}"]
        for i, j in enumerate(self.inputs(arch), start=1):
            parts.append(f"n{i}={ACTIVATIONS[acts[i]]}(n{j})")
        return " ".join(parts)

    def from_string(self, text: str) -> Architecture:
        if not isinstance(text, str):
            raise InvalidArchitectureError(f"{self.name}: expected a string, got {type(text)}.")
        tokens = text.split()
        if len(tokens) != self.num_nodes:
            raise InvalidArchitectureError(
                f"{self.name}: expected {self.num_nodes} nodes like 'n0=tanh n1=relu(n0)', "
                f"got {len(tokens)} in {text!r}."
            )
        decisions: List[int] = []
        for i, token in enumerate(tokens):
            match = _NODE_RE.match(token)
            if match is None:
                raise InvalidArchitectureError(
                    f"{self.name}: cannot parse {token!r}; expected 'n{i}=<activation>"
                    + ("'" if i == 0 else f"(n<j>)' with j < {i}")
                    + "."
                )
            index, act, source = match.groups()
            if int(index) != i:
                raise InvalidArchitectureError(
                    f"{self.name}: node {i} is written as n{index} in {token!r}; "
                    "nodes must be listed in order n0, n1, ..."
                )
            if act not in ACTIVATIONS:
                raise InvalidArchitectureError(
                    f"{self.name}: unknown activation {act!r} in {token!r}; "
                    f"choose from {ACTIVATIONS}."
                )
            if i == 0:
                if source is not None:
                    raise InvalidArchitectureError(
                        f"{self.name}: node 0 reads x_t and h_(t-1), it takes no input node "
                        f"({token!r})."
                    )
                decisions.append(ACTIVATIONS.index(act))
                continue
            if source is None:
                raise InvalidArchitectureError(
                    f"{self.name}: node {i} needs an input node, e.g. 'n{i}={act}(n0)'."
                )
            if int(source) >= i:
                raise InvalidArchitectureError(
                    f"{self.name}: node {i} reads n{source}, but inputs must be earlier nodes "
                    f"(n0 .. n{i - 1})."
                )
            decisions += [int(source), ACTIVATIONS.index(act)]
        return self.validate(decisions)

    # ---------------------------------------------------------------- plot
    def plot(self, arch: Sequence[int], path: str) -> str:
        """Draws the cell as a DAG (x_t, h_{t-1} → nodes → average → h_t) to a PNG."""
        from wpl_keras.utils.plotting import new_figure

        acts = self.activation_ids(arch)
        inputs = self.inputs(arch)
        loose = self.loose_ends(arch)
        n = self.num_nodes
        pos = {i: (1.0 + i, 0.6 * ((i % 3) - 1)) for i in range(n)}
        pos["x"] = (-0.3, 0.6)
        pos["h"] = (-0.3, -0.6)
        pos["out"] = (n + 1.2, 0.0)
        fig, ax = new_figure(figsize=(max(6.0, 1.1 * n + 2), 3.2))

        def arrow(a, b, color="0.3"):
            ax.annotate(
                "", xy=pos[b], xytext=pos[a],
                arrowprops=dict(arrowstyle="->", color=color, shrinkA=14, shrinkB=14,
                                connectionstyle="arc3,rad=0.15"),
            )

        arrow("x", 0)
        arrow("h", 0)
        for i, j in enumerate(inputs, start=1):
            arrow(j, i)
        for i in loose:
            arrow(i, "out", color="tab:blue")
        for key, (x, y) in pos.items():
            if isinstance(key, int):
                label = f"{key}\n{ACTIVATIONS[acts[key]]}"
                color = "tab:blue" if key in loose else "white"
            else:
                label = {"x": "x_t", "h": "h_t-1", "out": "avg\nh_t"}[key]
                color = "0.85"
            ax.text(x, y, label, ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="round", fc=color, alpha=0.6))
        ax.set_xlim(-1.0, n + 2.0)
        ax.set_ylim(-1.3, 1.3)
        ax.axis("off")
        ax.set_title(self.to_string(arch), fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path
