"""The airlock: statistical disclosure control on a partial before it leaves a site.

:func:`check` dispatches by the analysis's output kind; a kind without rules here is refused.

**Frequency tables** (:mod:`fedflow.core.frequency`). *Primary suppression* nulls every cell
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

**Summaries** (:mod:`fedflow.core.summary`). Fewer than ``threshold`` persons: refused. The
minimum and maximum are single persons' values and are withheld unless the policy releases
extremes. The quantile sketch is coarsened in value order into runs of at least ``threshold``
counts, each kept as one bucket at the key of its largest bucket (a short final run joins the
one before), so no bucket counts fewer than ``threshold`` values. (The sketch counts values,
not persons: when a person contributes several values a bucket may stand for fewer persons.)

**Regression rounds** (:mod:`fedflow.core.regression`) are released whole or refused, never
altered (a changed sum would make the federated fit wrong). Refused when the site has fewer
than ``threshold`` observations; when the model is saturated (no residual degrees of
freedom: as many parameters as observations, so the fit reproduces the data); when the
residual degrees of freedom are below ``threshold``; when there are more than
:data:`MAX_PARAMETERS_PER_OBSERVATION` parameters per observation (DataSHIELD's
``nfilter.glm``); for a binary outcome, when cases or non-cases number fewer than
``threshold``; for a count outcome, when the events number fewer than ``threshold``; and when
an indicator (0/1) design column is 1, or 0, for fewer than ``threshold`` observations (so no
small cell of the design, such as exposed women, can be read from XᵀWX).

**Survival grids** (:mod:`fedflow.core.survival`) are released whole or refused: refused when
a group has fewer than ``threshold`` persons, or when any grid point holds between 1 and
``threshold - 1`` events or censorings (a coarser grid, which the researcher asks for, cures
it). Suppressing a cell instead would change the numbers at risk after it.

**Cox rounds** (:mod:`fedflow.core.cox`) are released whole or refused, for the reasons of
both kinds above: refused when the site has fewer than ``threshold`` persons or events; when
there are more than :data:`MAX_PARAMETERS_PER_OBSERVATION` parameters per event; when any grid
point holds between 1 and ``threshold - 1`` events or censorings (the events and the risk-set
sizes per grid point are the same counts a Kaplan-Meier grid shows); and when an indicator
(0/1) design column is 1, or 0, for fewer than ``threshold`` persons.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pyarrow as pa

from fedflow.core import cox, frequency, regression, summary, survival
from fedflow.core.analysis import OutputKind
from fedflow.core.errors import InvalidRequest
from governance.errors import PolicyInvalid

__all__ = [
    "MAX_PARAMETERS_PER_OBSERVATION",
    "AirlockResult",
    "Outcome",
    "check",
    "check_cox",
    "check_frequency",
    "check_regression",
    "check_summary",
    "check_survival",
]

_TOLERANCE = 1e-9
MAX_PARAMETERS_PER_OBSERVATION = 0.33


class Outcome(StrEnum):
    """What the airlock did with a partial."""

    RELEASED = "released"
    SUPPRESSED = "released_with_suppression"
    REVIEW = "review"
    """Held at the site for a custodian's decision (see :mod:`governance.review`)."""
    REFUSED = "refused"


@dataclass(frozen=True)
class AirlockResult:
    """The airlock's verdict: the table to release (None when refused) and why."""

    outcome: Outcome
    table: pa.Table | None
    suppressed_cells: int
    reasons: tuple[str, ...]


def check(
    kind: OutputKind | str, table: pa.Table, *, threshold: int, release_extremes: bool = False
) -> AirlockResult:
    """Apply the disclosure rules of ``kind`` to ``table`` at the site's ``threshold``."""
    _check_threshold(threshold)
    try:
        kind = OutputKind(kind)
    except ValueError:
        return _refused(f"the airlock has no disclosure rules for output kind {kind!r}")
    if kind is OutputKind.FREQUENCY:
        return check_frequency(table, threshold=threshold)
    if kind is OutputKind.SUMMARY:
        return check_summary(table, threshold=threshold, release_extremes=release_extremes)
    if kind is OutputKind.REGRESSION:
        return check_regression(table, threshold=threshold)
    if kind is OutputKind.SURVIVAL:
        return check_survival(table, threshold=threshold)
    if kind is OutputKind.COX:
        return check_cox(table, threshold=threshold)
    return _refused(f"the airlock has no disclosure rules for output kind {kind.value!r}")


# -- frequency tables -------------------------------------------------------------------------


def check_frequency(table: pa.Table, *, threshold: int) -> AirlockResult:
    """Primary and secondary cell suppression of a frequency table (see the module docstring)."""
    _check_threshold(threshold)
    try:
        frequency.validate(table)
    except InvalidRequest as exc:
        return _refused(f"not a valid frequency table: {exc.message}")
    dims = frequency.dimensions(table)
    counts: list[int | None] = table[frequency.COUNT].to_pylist()
    keys: list[tuple[str, ...]] = list(zip(*(table[d].to_pylist() for d in dims), strict=True))
    if not dims:
        if table.num_rows != 1:
            return _refused("a frequency table without dimensions must hold exactly one count")
        keys = [()]
    if any(v is None for key in keys for v in key):
        return _refused("a frequency table's dimension values must not be null")
    if len(set(keys)) != len(keys):
        return _refused("a frequency table must not repeat a cell")

    already = {i for i, c in enumerate(counts) if c is None}
    primary = {i for i, c in enumerate(counts) if c is not None and 0 < c < threshold}
    suppressed = already | primary
    constraints = _constraints(keys) if dims else []
    secondary = _secondary(keys, counts, constraints, suppressed)
    if secondary is None:
        return _refused("suppressed cells could not be protected from recovery through the margins")
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
    basis = vectors[:, eigenvalues > _TOLERANCE * max(1.0, float(eigenvalues.max(initial=0.0)))]
    if basis.shape[1] == 0:
        return []
    projection = (basis**2).sum(axis=1)  # squared norm of each e_j's row-space part
    return [unknowns[j] for j in np.flatnonzero(projection > 1 - 1e-6)]


# -- summaries -------------------------------------------------------------------------------


def check_summary(
    table: pa.Table, *, threshold: int, release_extremes: bool = False
) -> AirlockResult:
    """Refuse small summaries, withhold extremes, coarsen the sketch (see the module docstring)."""
    _check_threshold(threshold)
    try:
        summary.validate(table)
    except InvalidRequest as exc:
        return _refused(f"not a valid summary partial: {exc.message}")
    n, persons = int(table["n"][0].as_py()), int(table["persons"][0].as_py())
    if persons < threshold:
        return _refused(f"{persons} persons is below the threshold of {threshold}")
    buckets = summary.ordered_buckets(table)
    if sum(b[2] for b in buckets) != n or any(b[2] <= 0 for b in buckets):
        return _refused("the quantile sketch does not account for the summary's values")
    suppressed, reasons = 0, []
    if not release_extremes:
        empty = pa.array([None], pa.float64())
        table = table.set_column(table.column_names.index("min"), "min", empty)
        table = table.set_column(table.column_names.index("max"), "max", empty)
        suppressed += 2
        reasons.append("minimum and maximum withheld by policy")
    coarse = _coarsen(buckets, threshold)
    merged = len(buckets) - len(coarse)
    if merged:
        table = summary.with_buckets(table, coarse)
        suppressed += merged
        reasons.append(
            f"{merged} sketch buckets merged into neighbours so each holds at least {threshold}"
        )
    outcome = Outcome.SUPPRESSED if suppressed else Outcome.RELEASED
    return AirlockResult(outcome, table, suppressed, tuple(reasons))


def _coarsen(buckets: list[summary.Bucket], threshold: int) -> list[summary.Bucket]:
    runs: list[list[summary.Bucket]] = []
    current: list[summary.Bucket] = []
    for bucket in buckets:
        current.append(bucket)
        if sum(b[2] for b in current) >= threshold:
            runs.append(current)
            current = []
    if current:
        if runs:
            runs[-1].extend(current)
        else:
            runs.append(current)
    coarse = []
    for run in runs:
        sign, key, _ = max(run, key=lambda b: b[2])  # first largest bucket on ties
        coarse.append((sign, key, sum(b[2] for b in run)))
    return coarse


# -- regression rounds ----------------------------------------------------------------------


def check_regression(table: pa.Table, *, threshold: int) -> AirlockResult:
    """Release a GLM round's statistics whole, or refuse them (see the module docstring)."""
    _check_threshold(threshold)
    try:
        regression.validate(table)
    except InvalidRequest as exc:
        return _refused(f"not a valid regression partial: {exc.message}")
    row = table.to_pylist()[0]
    n, p, columns = row["n"], len(row["columns"]), row["columns"]
    reasons = []
    if n < threshold:
        reasons.append(f"{n} observations is below the threshold of {threshold}")
    if n <= p:
        reasons.append(f"saturated model: {p} parameters for {n} observations")
    elif n - p < threshold:
        reasons.append(f"{n - p} residual degrees of freedom is below the threshold of {threshold}")
    if n and p / n > MAX_PARAMETERS_PER_OBSERVATION:
        reasons.append(
            f"{p / n:.2f} parameters per observation exceeds {MAX_PARAMETERS_PER_OBSERVATION:g}"
        )
    if row["family"] == "binomial":
        for label, count in (("cases", row["y_one"]), ("non-cases", row["y_zero"])):
            if count < threshold:
                reasons.append(f"{count} {label} is below the threshold of {threshold}")
    if row["family"] == "poisson" and row["y_sum"] < threshold:
        reasons.append(f"{row['y_sum']:g} events is below the threshold of {threshold}")
    for column, ones in zip(columns, row["indicator_ones"], strict=True):
        if ones is not None and (0 < ones < threshold or 0 < n - ones < threshold):
            reasons.append(
                f"indicator column {column!r} has a cell below the threshold of {threshold}"
            )
    if reasons:
        return AirlockResult(Outcome.REFUSED, None, 0, tuple(reasons))
    return AirlockResult(Outcome.RELEASED, table, 0, ())


# -- survival grids --------------------------------------------------------------------------


def check_survival(table: pa.Table, *, threshold: int) -> AirlockResult:
    """Release a gridded survival partial whole, or refuse it (see the module docstring)."""
    _check_threshold(threshold)
    try:
        survival.validate(table)
    except InvalidRequest as exc:
        return _refused(f"not a valid survival partial: {exc.message}")
    reasons = []
    totals: dict[str, int] = defaultdict(int)
    small: dict[str, int] = defaultdict(int)
    for row in table.to_pylist():
        totals[row["group"]] += row["events"] + row["censored"]
        for count in (row["events"], row["censored"]):
            if 0 < count < threshold:
                small[row["group"]] += 1
    for group, total in sorted(totals.items()):
        if total < threshold:
            reasons.append(
                f"group {group!r}: {total} persons is below the threshold of {threshold}"
            )
    for group, cells in sorted(small.items()):
        reasons.append(
            f"group {group!r}: {cells} grid cells below the threshold of {threshold} "
            "(ask for a coarser grid)"
        )
    if reasons:
        return AirlockResult(Outcome.REFUSED, None, 0, tuple(reasons))
    return AirlockResult(Outcome.RELEASED, table, 0, ())


# -- Cox rounds -----------------------------------------------------------------------------


def check_cox(table: pa.Table, *, threshold: int) -> AirlockResult:
    """Release a Cox round's risk-set sums whole, or refuse them (see the module docstring)."""
    _check_threshold(threshold)
    try:
        cox.validate(table)
    except InvalidRequest as exc:
        return _refused(f"not a valid Cox partial: {exc.message}")
    row = table.to_pylist()[0]
    events, at_risk = row["events"], row["at_risk"]
    n, total, p = at_risk[0], sum(events), len(row["columns"])
    reasons = []
    if n < threshold:
        reasons.append(f"{n} persons is below the threshold of {threshold}")
    if total < threshold:
        reasons.append(f"{total} events is below the threshold of {threshold}")
    if total == 0 or p / total > MAX_PARAMETERS_PER_OBSERVATION:
        reasons.append(
            f"{p} parameters for {total} events exceeds "
            f"{MAX_PARAMETERS_PER_OBSERVATION:g} parameters per event"
        )
    later = [*at_risk[1:], 0]
    censored = [r - r_next - e for r, r_next, e in zip(at_risk, later, events, strict=True)]
    if any(c < 0 for c in censored):
        return _refused("the Cox partial's numbers at risk do not account for its events")
    cells = sum(0 < c < threshold for c in (*events, *censored))
    if cells:
        reasons.append(
            f"{cells} grid cells below the threshold of {threshold} (ask for a coarser grid)"
        )
    for column, ones in zip(row["columns"], row["indicator_ones"], strict=True):
        if ones is not None and (0 < ones < threshold or 0 < n - ones < threshold):
            reasons.append(
                f"indicator column {column!r} has a cell below the threshold of {threshold}"
            )
    if reasons:
        return AirlockResult(Outcome.REFUSED, None, 0, tuple(reasons))
    return AirlockResult(Outcome.RELEASED, table, 0, ())


# -- helpers ---------------------------------------------------------------------------------


def _check_threshold(threshold: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise PolicyInvalid("the minimum cell count must be a non-negative integer")


def _refused(reason: str) -> AirlockResult:
    return AirlockResult(Outcome.REFUSED, None, 0, (reason,))
