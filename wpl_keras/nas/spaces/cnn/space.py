"""The ENAS micro (cell) search space for image classification (ENAS §2.4, WPL paper §4).

A cell has ``B`` nodes. Node ``i`` (numbered ``2 .. B+1``; ``0`` and ``1`` are the two cell
inputs, the outputs of the cell before the previous one and of the previous one) takes two
inputs ``x`` and ``y`` among the cell inputs and the earlier nodes, applies one operation to
each and adds the results:

    ``h_i = op_x(h_{in_x}) + op_y(h_{in_y})``,  ``in_x, in_y ∈ {0, …, i − 1}``

The cell output is the mean of the nodes that no other node uses (the "loose ends").
An architecture is a normal cell followed by a reduction cell, each as ``4 B`` decisions
``(in_x, op_x, in_y, op_y)`` per node, so ``decision_sizes`` is
``(2, 5, 2, 5, 3, 5, 3, 5, …)`` twice.

Operations (ids in this order): identity, separable conv 3×3, separable conv 5×5,
average pool 3×3, max pool 3×3.

>>> space = MicroCellSpace(num_nodes=2)
>>> space.decision_sizes
(2, 5, 2, 5, 3, 5, 3, 5, 2, 5, 2, 5, 3, 5, 3, 5)
>>> MicroCellSpace(num_nodes=1).to_string((0, 1, 1, 0, 1, 2, 0, 4))
'normal: 2=sep3x3(0)+identity(1) | reduce: 2=sep5x5(1)+max3x3(0)'
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

OPS: Tuple[str, ...] = ("identity", "sep3x3", "sep5x5", "avg3x3", "max3x3")
CELL_TYPES: Tuple[str, ...] = ("normal", "reduce")
SLOTS: Tuple[str, ...] = ("x", "y")

NodeSpec = Tuple[int, int, int, int]  # (in_x, op_x, in_y, op_y)


class MicroCellSpace(SearchSpace):
    """ENAS micro-cell space: a normal and a reduction cell of ``num_nodes`` nodes each.

    Args:
        num_nodes: ``B``, nodes per cell (ENAS / WPL reference: 5); an int (a NumPy integer
            is accepted, a bool, float or string is not).

    Raises:
        InvalidSpaceError: (a ``ValueError``) if ``num_nodes`` is not an int ``>= 1``.
    """

    name = "enas_micro"
    ops = OPS

    def __init__(self, num_nodes: int = 5):
        self.num_nodes = check_size(num_nodes, "MicroCellSpace num_nodes", 1)
        sizes: List[int] = []
        names: List[str] = []
        for cell in CELL_TYPES:
            for i in range(self.num_nodes):
                node = i + 2
                for slot in SLOTS:
                    sizes += [node, len(OPS)]
                    names += [f"{cell}_node{node}_{slot}_input", f"{cell}_node{node}_{slot}_op"]
        self._sizes = tuple(sizes)
        self._names = tuple(names)

    # ------------------------------------------------------------------ contract
    @property
    def decision_sizes(self) -> Tuple[int, ...]:
        return self._sizes

    @property
    def decision_names(self) -> Tuple[str, ...]:
        return self._names

    @property
    def decisions_per_cell(self) -> int:
        """``4 B``: decisions of one cell."""
        return 4 * self.num_nodes

    def decision_index(self, cell: int, node: int, slot: int, what: str) -> int:
        """Flat position of one decision.

        Args:
            cell: 0 normal, 1 reduction.
            node: node position ``0 .. B-1`` (the node numbered ``node + 2``).
            slot: 0 for ``x``, 1 for ``y``.
            what: ``"input"`` or ``"op"``.
        """
        if what not in ("input", "op"):
            raise ValueError(f"what must be 'input' or 'op', got {what!r}.")
        for field, value, bound in (("cell", cell, 2), ("node", node, self.num_nodes),
                                    ("slot", slot, 2)):
            if not 0 <= strict_int(value, f"decision_index {field}") < bound:
                raise InvalidArchitectureError(
                    f"decision_index {field} is {value}, must be in [0, {bound})."
                )
        return cell * self.decisions_per_cell + 4 * node + 2 * slot + (what == "op")

    def cells(self, arch: Sequence[int]) -> Tuple[List[NodeSpec], List[NodeSpec]]:
        """Splits a validated architecture into (normal, reduction) lists of node specs."""
        arch = self.validate(arch)
        out = []
        for c in range(2):
            base = c * self.decisions_per_cell
            out.append(
                [tuple(arch[base + 4 * i : base + 4 * i + 4]) for i in range(self.num_nodes)]
            )
        return out[0], out[1]

    def loose_ends(self, cell: Sequence[NodeSpec]) -> List[int]:
        """Node numbers (``2 .. B+1``) that no node of ``cell`` takes as input."""
        used = set()
        for in_x, _, in_y, _ in cell:
            used.update((in_x, in_y))
        return [i + 2 for i in range(len(cell)) if i + 2 not in used]

    # ------------------------------------------------------------------ strings
    def _cell_string(self, cell: Sequence[NodeSpec]) -> str:
        parts = []
        for i, (in_x, op_x, in_y, op_y) in enumerate(cell):
            parts.append(f"{i + 2}={OPS[op_x]}({in_x})+{OPS[op_y]}({in_y})")
        return " ".join(parts)

    def to_string(self, arch: Sequence[int]) -> str:
        """``"normal: 2=op(in)+op(in) 3=… | reduce: …"``; inputs 0/1 are the cell inputs."""
        normal, reduce = self.cells(arch)
        return f"normal: {self._cell_string(normal)} | reduce: {self._cell_string(reduce)}"

    # ASCII digits without leading zeros, as to_string writes them.
    _NODE = re.compile(
        r"^(0|[1-9][0-9]*)=(\w+)\((0|[1-9][0-9]*)\)\+(\w+)\((0|[1-9][0-9]*)\)$"
    )

    def from_string(self, text: str) -> Architecture:
        """Parses :meth:`to_string` output; raises :class:`InvalidArchitectureError`."""
        if not isinstance(text, str):
            raise InvalidArchitectureError(f"{self.name}: expected a string, got {text!r}.")
        halves = [h.strip() for h in text.split("|")]
        if len(halves) != 2:
            raise InvalidArchitectureError(
                f"{self.name}: expected 'normal: … | reduce: …', got {text!r}."
            )
        arch: List[int] = []
        for cell_name, half in zip(CELL_TYPES, halves):
            prefix = f"{cell_name}:"
            if not half.startswith(prefix):
                raise InvalidArchitectureError(
                    f"{self.name}: cell description must start with {prefix!r}, got {half!r}."
                )
            nodes = half[len(prefix) :].split()
            if len(nodes) != self.num_nodes:
                raise InvalidArchitectureError(
                    f"{self.name}: {cell_name} cell has {len(nodes)} nodes, expected "
                    f"{self.num_nodes}."
                )
            for i, node_text in enumerate(nodes):
                match = self._NODE.match(node_text)
                if match is None:
                    raise InvalidArchitectureError(
                        f"{self.name}: cannot parse node {node_text!r}; expected "
                        "'N=op(in)+op(in)' with op in " + ", ".join(OPS) + "."
                    )
                number, op_x, in_x, op_y, in_y = match.groups()
                if int(number) != i + 2:
                    raise InvalidArchitectureError(
                        f"{self.name}: node {node_text!r} out of order, expected node {i + 2}."
                    )
                for op in (op_x, op_y):
                    if op not in OPS:
                        raise InvalidArchitectureError(
                            f"{self.name}: unknown op {op!r}; ops are {', '.join(OPS)}."
                        )
                arch += [int(in_x), OPS.index(op_x), int(in_y), OPS.index(op_y)]
        return self.validate(arch)

    # ------------------------------------------------------------------ picture
    def plot(self, arch: Sequence[int], path: str) -> str:
        """Draws both cells as DAGs (inputs left, nodes right, edges labelled by op) to a PNG."""
        from wpl_keras.utils.plotting import new_figure

        cells = self.cells(arch)
        fig, axes = new_figure(1, 2, figsize=(5 + 1.6 * self.num_nodes, 4))
        for ax, cell_name, cell in zip(axes, CELL_TYPES, cells):
            pos = {0: (0.0, 0.25), 1: (0.0, 0.75)}
            for i in range(self.num_nodes):
                pos[i + 2] = (1.0 + i, 0.5 + 0.3 * ((-1) ** i))
            pos["out"] = (self.num_nodes + 1.0, 0.5)
            labels = {0: "c[k-2]", 1: "c[k-1]", "out": "out"}
            for node, (px, py) in pos.items():
                ax.text(
                    px, py, labels.get(node, str(node)), ha="center", va="center",
                    bbox=dict(boxstyle="round", fc="lightblue" if node in (0, 1) else "wheat"),
                )
            for i, (in_x, op_x, in_y, op_y) in enumerate(cell):
                for t, src, op in ((0.4, in_x, op_x), (0.65, in_y, op_y)):
                    (x0, y0), (x1, y1) = pos[src], pos[i + 2]
                    ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                                arrowprops=dict(arrowstyle="->", color="gray"))
                    # x and y labels at different points, so that two edges from the
                    # same input stay readable
                    ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), OPS[op], fontsize=7,
                            color="darkred", ha="center")
            for node in self.loose_ends(cell):
                (x0, y0), (x1, y1) = pos[node], pos["out"]
                ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                            arrowprops=dict(arrowstyle="->", color="black", ls="--"))
            ax.set_xlim(-0.5, self.num_nodes + 1.5)
            ax.set_ylim(0.0, 1.0)
            ax.set_title(f"{cell_name} cell")
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=80)
        return str(path)
