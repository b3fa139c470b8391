"""**Frequency tables** (:mod:`fedflow.core.frequency`). *Primary suppression* nulls every cell
(interior or margin) with ``0 < count < threshold``. Zero cells, and combinations absent from
the table, are released: they are known zeros (a zero does not single anybody out, and the
absence of a combination in a cube already says it is empty). *Secondary suppression* then
protects the suppressed cells from recovery through the margins: every margin cell equals,
for each dimension it sums over, the sum of the cells one level down (absent cells count as
zero). Over the suppressed cells as unknowns, an unknown is determined exactly when its unit
vector lies in the row space of the constraint matrix (restricted to the suppressed columns);
while some suppressed cell is determined, one more cell from a constraint that determines it
is suppressed: the released cell with the smallest positive count, interior cells before
margins and the grand total last. Exact recovery is what this rules out; bounds (a suppressed
cell lies between 1 and a margin) remain, as in every cell-suppression scheme.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

from fedflow.core import frequency
from fedflow.core.errors import InvalidRequest
from governance.airlock.result import TOLERANCE, AirlockResult, Outcome, check_threshold, refused

__all__ = ["check_frequency"]


def check_frequency(table: pa.Table, *, threshold: int) -> AirlockResult:
    """Primary and secondary cell suppression of a frequency table (see the module docstring)."""
    check_threshold(threshold)
    try:
        frequency.validate(table)
    except InvalidRequest as exc:
        return refused(f"not a valid frequency table: {exc.message}")
    dims = frequency.dimensions(table)
    counts: list[int | None] = table[frequency.COUNT].to_pylist()
    keys: list[tuple[str, ...]] = list(zip(*(table[d].to_pylist() for d in dims), strict=True))
    if not dims:
        if table.num_rows != 1:
            return refused("a frequency table without dimensions must hold exactly one count")
        keys = [()]
    if any(v is None for key in keys for v in key):
        return refused("a frequency table's dimension values must not be null")
    if len(set(keys)) != len(keys):
        return refused("a frequency table must not repeat a cell")

    already = {i for i, c in enumerate(counts) if c is None}
    primary = {i for i, c in enumerate(counts) if c is not None and 0 < c < threshold}
    suppressed = already | primary
    constraints = _constraints(keys) if dims else []
    secondary = _secondary(keys, counts, constraints, suppressed)
    if secondary is None:
        return refused("suppressed cells could not be protected from recovery through the margins")
    suppressed |= secondary

    reasons = []
    if already:
        reasons.append(f"{len(already)} cells arrived suppressed")
    if primary:
        reasons.append(f"{len(primary)} cells below the threshold of {threshold} suppressed")
    if secondary:
        reasons.append(
            f"{len(secondary)} cells suppressed so suppressed cells cannot be recovered "
            "from margins"
        )
    released = [None if i in suppressed else c for i, c in enumerate(counts)]
    count_type = table.schema.field(frequency.COUNT).type
    index = table.column_names.index(frequency.COUNT)
    out = table.set_column(index, frequency.COUNT, pa.array(released, count_type))
    outcome = Outcome.SUPPRESSED if suppressed else Outcome.RELEASED
    return AirlockResult(outcome, out, len(suppressed), tuple(reasons))


def _constraints(keys: list[tuple[str, ...]]) -> list[dict[int, int]]:
    """Each margin cell equals, per summed dimension, the cells one level down (coefficients)."""
    index = {key: i for i, key in enumerate(keys)}
    children: dict[tuple[int, tuple[str, ...]], list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        for d, value in enumerate(key):
            if value != frequency.MARGIN:
                parent = (*key[:d], frequency.MARGIN, *key[d + 1 :])
                children[(d, parent)].append(i)
    rows = []
    for key, m in index.items():
        for d, value in enumerate(key):
            if value == frequency.MARGIN:
                row = {m: 1}
                for child in children.get((d, key), []):
                    row[child] = -1
                rows.append(row)
    return rows


def _secondary(
    keys: list[tuple[str, ...]],
    counts: list[int | None],
    constraints: list[dict[int, int]],
    suppressed: set[int],
) -> set[int] | None:
    """Cells to suppress so no suppressed cell is determined; None if that is impossible.

    Each round finds the determined cells with one rank computation, takes each one's best
    complement, and adds them best first, skipping a cell whose constraints already got a
    complement this round (so disjoint parts of the table are protected together and the
    next round re-checks the rest).
    """
    hidden = set(suppressed)
    added: set[int] = set()
    by_cell: dict[int, list[dict[int, int]]] = defaultdict(list)
    for constraint in constraints:
        for cell in constraint:
            by_cell[cell].append(constraint)
    while True:
        determined = _determined(constraints, sorted(hidden))
        if not determined:
            return added
        best: list[tuple[tuple[int, int, int, int], int, int]] = []  # (preference, pick, cell)
        for cell in determined:
            candidates = _complements(keys, counts, by_cell[cell], hidden)
            if candidates:
                best.append((_preference(keys, counts, candidates[0]), candidates[0], cell))
        if not best:
            fallback = _complements(keys, counts, constraints, hidden)
            if not fallback:
                return None
            best.append((_preference(keys, counts, fallback[0]), fallback[0], determined[0]))
        touched: set[int] = set()  # cells sharing a constraint with this round's complements
        for _, pick, cell in sorted(best):
            holding = by_cell[cell]
            if pick in hidden or any(c in touched for con in holding for c in con):
                continue
            hidden.add(pick)
            added.add(pick)
            touched.update(c for con in (*by_cell[pick], *holding) for c in con)


def _complements(
    keys: list[tuple[str, ...]],
    counts: list[int | None],
    constraints: list[dict[int, int]],
    hidden: set[int],
) -> list[int]:
    """Released cells with a positive count in ``constraints``, best complement first."""
    cells = {i for c in constraints for i in c if i not in hidden and (counts[i] or 0) > 0}
    return sorted(cells, key=lambda i: _preference(keys, counts, i))


def _preference(
    keys: list[tuple[str, ...]], counts: list[int | None], i: int
) -> tuple[int, int, int, int]:
    """Grand total last, then fewer summed dimensions, then the smaller count."""
    margins = sum(v == frequency.MARGIN for v in keys[i])
    return (int(margins == len(keys[i])), margins, counts[i] or 0, i)


def _determined(constraints: list[dict[int, int]], unknowns: list[int]) -> list[int]:
    """The unknowns the constraints fix exactly: their unit vector is in the row space."""
    if not unknowns:
        return []
    column = {cell: j for j, cell in enumerate(unknowns)}
    rows = [r for r in constraints if any(cell in column for cell in r)]
    if not rows:
        return []
    matrix = np.zeros((len(rows), len(unknowns)))
    for e, row in enumerate(rows):
        for cell, coefficient in row.items():
            if cell in column:
                matrix[e, column[cell]] = coefficient
    # The row space of the matrix is the span of the Gram matrix's eigenvectors with nonzero
    # eigenvalues; eigh of the small square Gram matrix is far cheaper than an SVD.
    eigenvalues, vectors = np.linalg.eigh(matrix.T @ matrix)
    basis = vectors[:, eigenvalues > TOLERANCE * max(1.0, float(eigenvalues.max(initial=0.0)))]
    if basis.shape[1] == 0:
        return []
    projection = (basis**2).sum(axis=1)  # squared norm of each e_j's row-space part
    return [unknowns[j] for j in np.flatnonzero(projection > 1 - 1e-6)]
