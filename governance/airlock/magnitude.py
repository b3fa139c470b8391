"""**Magnitude tables** (:mod:`fedflow.core.magnitude`): persons and sums per cell, with margins.

Every cell (interior or margin) is checked against three rules on the per-person
contributions the site kept (the ``top`` contributions; they never leave the site), with
ACRO's default parameters (``acro/default.yaml``, ACRO 1.0.2):

- **threshold**: ``0 < persons < threshold`` (ACRO ``safe_threshold``);
- **(n, k) dominance**: the ``n`` largest contributions make up at least ``k`` of the cell's
  sum, ``n = 2``, ``k = 0.90`` (``safe_nk_n``, ``safe_nk_k``);
- **p% rule** (p-ratio): ``(sum - x1 - x2) / x1 < p``, ``p = 0.10`` (``safe_pratio_p``): the
  rest of the cell does not hide the largest contribution from the second largest to within
  p percent (a single contributor always fails it). As in ACRO, a cell whose contributions are
  all zero (``x1 = 0``) fails it too: its sum discloses that every contributor's value is zero.

Each rule is judged on every cell on its own (:func:`sensitive_cells`), as ACRO does.

Dominance is not defined when a contribution is negative: such a cell is suppressed (ACRO asks
for a review; we suppress, so nothing is released on a rule that cannot be evaluated). A cell
with no persons is released (an empty cell). A failing cell is suppressed whole
(``persons`` and ``sum`` null) and, since sums add up along the margins exactly as counts do,
the frequency tables' secondary suppression then protects it from recovery through the
margins (complements chosen by fewest persons). The released table has the site-only columns
dropped. A table without them (so without evidence for the dominance rules) is refused.
"""

from __future__ import annotations

import pyarrow as pa

from fedflow.core import magnitude
from fedflow.core.errors import InvalidRequest
from governance.airlock.frequency import _constraints, _secondary
from governance.airlock.result import AirlockResult, Outcome, check_threshold, refused
from governance.errors import PolicyInvalid

__all__ = ["NK_K", "NK_N", "P_RATIO", "check_magnitude", "dominance", "sensitive_cells"]

NK_N = 2
"""ACRO's ``safe_nk_n``: the number of largest contributions the (n, k) rule adds up."""
NK_K = 0.90
"""ACRO's ``safe_nk_k``: the share of the cell those contributions may not reach."""
P_RATIO = 0.10
"""ACRO's ``safe_pratio_p``: the smallest share of the largest contribution the rest must hold."""


def dominance(
    total: float, top: list[float], *, n: int = NK_N, k: float = NK_K, p: float = P_RATIO
) -> list[str]:
    """The dominance rules one cell fails (``"nk"``, ``"p%"``), from its largest contributions.

    ``top`` holds the cell's contributions largest first (at least ``n`` of them when the
    cell has that many contributors); all contributions are non-negative.
    """
    failed = []
    if total > 0 and sum(top[:n]) / total >= k:
        failed.append("nk")
    x1 = top[0] if top else 0.0
    x2 = top[1] if len(top) > 1 else 0.0
    if x1 == 0 or (total - x1 - x2) / x1 < p:
        failed.append("p%")
    return failed


def sensitive_cells(
    table: pa.Table,
    *,
    threshold: int,
    nk_n: int = NK_N,
    nk_k: float = NK_K,
    p: float = P_RATIO,
) -> dict[str, set[int]]:
    """Per rule, the rows of a magnitude table (with contributions) that fail it.

    Rules: ``threshold``, ``negative`` (a negative contribution: dominance undefined), ``nk``
    and ``p%``. Each is judged on every cell that holds persons and is not yet suppressed.
    """
    persons: list[int | None] = table[magnitude.PERSONS].to_pylist()
    sums: list[float | None] = table[magnitude.SUM].to_pylist()
    tops: list[list[float] | None] = table["top"].to_pylist()
    negatives: list[int | None] = table["negatives"].to_pylist()
    failing: dict[str, set[int]] = {"threshold": set(), "negative": set(), "nk": set(), "p%": set()}
    for i, (count, total) in enumerate(zip(persons, sums, strict=True)):
        if count is None or total is None or count == 0:
            continue
        if count < threshold:
            failing["threshold"].add(i)
        if negatives[i]:
            failing["negative"].add(i)
            continue
        for rule in dominance(total, tops[i] or [], n=nk_n, k=nk_k, p=p):
            failing[rule].add(i)
    return failing


def check_magnitude(
    table: pa.Table,
    *,
    threshold: int,
    nk_n: int = NK_N,
    nk_k: float = NK_K,
    p: float = P_RATIO,
) -> AirlockResult:
    """Threshold, (n, k) and p% rules, then secondary suppression (see the module docstring)."""
    check_threshold(threshold)
    if not 1 <= nk_n <= magnitude.TOP or not 0 < nk_k <= 1 or not 0 <= p < 1:
        raise PolicyInvalid(
            f"dominance parameters need 1 <= n <= {magnitude.TOP}, 0 < k <= 1 and 0 <= p < 1"
        )
    try:
        magnitude.validate(table)
    except InvalidRequest as exc:
        return refused(f"not a valid magnitude table: {exc.message}")
    if not magnitude.has_contributions(table):
        return refused("a magnitude table needs the site's contributions for the dominance rules")
    dims = magnitude.dimensions(table)
    keys: list[tuple[str, ...]] = list(zip(*(table[d].to_pylist() for d in dims), strict=True))
    if not dims:
        if table.num_rows != 1:
            return refused("a magnitude table without dimensions must hold exactly one cell")
        keys = [()]
    if any(v is None for key in keys for v in key):
        return refused("a magnitude table's dimension values must not be null")
    if len(set(keys)) != len(keys):
        return refused("a magnitude table must not repeat a cell")

    persons: list[int | None] = table[magnitude.PERSONS].to_pylist()
    sums: list[float | None] = table[magnitude.SUM].to_pylist()
    already = {
        i for i, (c, v) in enumerate(zip(persons, sums, strict=True)) if c is None or v is None
    }
    failing = sensitive_cells(table, threshold=threshold, nk_n=nk_n, nk_k=nk_k, p=p)
    suppressed = already.union(*failing.values())
    secondary = _secondary(keys, persons, _constraints(keys) if dims else [], suppressed)
    if secondary is None:
        return refused("suppressed cells could not be protected from recovery through the margins")
    suppressed |= secondary

    reasons = []
    for cells, why in (
        (already, "arrived suppressed"),
        (failing["threshold"], f"below the threshold of {threshold} persons"),
        (failing["negative"], "with negative contributions (dominance is undefined)"),
        (failing["nk"], f"dominated by their {nk_n} largest contributions (>= {nk_k:g})"),
        (failing["p%"], f"failing the p% rule (p = {p:g})"),
        (secondary, "suppressed so suppressed cells cannot be recovered from margins"),
    ):
        if cells:
            reasons.append(f"{len(cells)} cells {why}")
    out = magnitude.public(table)
    for column, values in ((magnitude.PERSONS, persons), (magnitude.SUM, sums)):
        kept = [None if i in suppressed else v for i, v in enumerate(values)]
        index = out.column_names.index(column)
        out = out.set_column(index, column, pa.array(kept, out.schema.field(column).type))
    outcome = Outcome.SUPPRESSED if suppressed else Outcome.RELEASED
    return AirlockResult(outcome, out, len(suppressed), tuple(reasons))
