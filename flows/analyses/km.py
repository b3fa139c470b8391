"""Kaplan-Meier on a time grid: events and censorings per group and grid interval.

Time zero is a person's first ``entry`` record (e.g. a first NSAID exposure); the event is the
first ``event`` record on or after it (persons with an event before entry are left out, as
prevalent cases); follow-up ends at the end of the person's last observation period. Each
person belongs to the first of ``groups`` (in the order given) of which they have any record;
persons in none are left out. Times are rounded up to a grid of ``interval_days`` and
follow-up is cut at ``max_days``: only counts per grid point leave a site, never an event
date. The finalized result is the Kaplan-Meier curve with Greenwood standard errors and
log(-log) confidence intervals (as lifelines computes them); :func:`logrank` tests whether
the groups' curves differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field, model_validator

from fedflow.core import Analysis, OutputKind, Params, TableColumns, survival
from flows.analyses.cohort import concept_set
from flows.analyses.glm_table import Variable

__all__ = ["KaplanMeier", "KaplanMeierParams", "gridded_persons", "logrank"]

_PERIOD = ["person_id", "observation_period_end_date"]


class KaplanMeierParams(Params):
    """Who enters, what ends follow-up, the groups and the time grid."""

    entry: Variable
    event: Variable
    groups: dict[str, Variable] = Field(min_length=1, max_length=20)
    interval_days: int = Field(default=365, ge=1, le=36500)
    max_days: int = Field(default=3650, ge=1, le=73000)
    confidence: float = Field(default=0.95, gt=0, lt=1)

    @model_validator(mode="after")
    def _grid(self) -> KaplanMeierParams:
        if self.max_days < self.interval_days:
            raise ValueError("max_days is shorter than one interval")
        return self


class KaplanMeier(Analysis[KaplanMeierParams]):
    """Kaplan-Meier survival by group on a time grid the site's airlock checks."""

    name = "kaplan_meier"
    version = "1.0"
    output = OutputKind.SURVIVAL
    params_model = KaplanMeierParams

    def tables(self, params: KaplanMeierParams) -> TableColumns:
        from flows.analyses.cohort import DOMAINS

        declared: dict[str, list[str]] = {"observation_period": list(_PERIOD)}
        for variable in (params.entry, params.event, *params.groups.values()):
            table, concept, when = DOMAINS[variable.domain]
            declared[table] = ["person_id", concept, when]
            if variable.include_descendants:
                declared["concept_ancestor"] = ["ancestor_concept_id", "descendant_concept_id"]
        return declared

    def local(self, tables: Mapping[str, pa.Table], params: KaplanMeierParams) -> pa.Table:
        persons = gridded_persons(tables, params)
        counts = persons.group_by("group", "interval").agg(
            pl.col("event").sum().alias("events"), (~pl.col("event")).sum().alias("censored")
        )
        return survival.from_counts(
            [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in counts.iter_rows()]
        )

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        return survival.merge(partials)

    def finalize(self, partial: pa.Table, params: KaplanMeierParams) -> pa.Table:
        z = _normal_quantile(0.5 + params.confidence / 2)
        frames = []
        for group, rows in _by_group(partial).items():
            at_risk = rows["total"] - np.concatenate([[0], np.cumsum(rows["leaving"])[:-1]])
            d = rows["events"]
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.cumprod(np.where(at_risk > 0, 1 - d / at_risk, 1.0))
                greenwood = np.cumsum(np.where(at_risk > d, d / (at_risk * (at_risk - d)), 0.0))
                # lifelines' exponential Greenwood interval on log(-log S).
                v = greenwood / np.log(s) ** 2
                log_log = np.log(-np.log(s))
                low = np.exp(-np.exp(log_log + z * np.sqrt(v)))
                high = np.exp(-np.exp(log_log - z * np.sqrt(v)))
            frames.append(
                pl.DataFrame(
                    {
                        "group": [group] * len(d),
                        "interval": rows["interval"],
                        "days": rows["interval"] * params.interval_days,
                        "at_risk": at_risk.astype(np.int64),
                        "events": d.astype(np.int64),
                        "censored": rows["censored"].astype(np.int64),
                        "survival": s,
                        "std_error": s * np.sqrt(greenwood),
                        "ci_low": low,
                        "ci_high": high,
                    }
                )
            )
        return pl.concat(frames).to_arrow()


def gridded_persons(tables: Mapping[str, pa.Table], params: KaplanMeierParams) -> pl.DataFrame:
    """One row per person in the analysis: id, group, grid interval, and whether it is an event."""
    entry = _first(tables, params.entry, "entry_date")
    event = _first(tables, params.event, "event_date")
    periods = _frame(tables["observation_period"])
    end = periods.group_by("person_id").agg(pl.col("observation_period_end_date").max())
    persons = entry.join(end, on="person_id", how="inner").join(event, on="person_id", how="left")
    persons = persons.filter(
        pl.col("event_date").is_null() | (pl.col("event_date") >= pl.col("entry_date"))
    )
    group = pl.lit(None, pl.String)
    for name, variable in reversed(params.groups.items()):
        members = _first(tables, variable, "seen")["person_id"].implode()
        group = pl.when(pl.col("person_id").is_in(members)).then(pl.lit(name)).otherwise(group)
    last = math.ceil(params.max_days / params.interval_days)
    days = (
        pl.coalesce("event_date", "observation_period_end_date") - pl.col("entry_date")
    ).dt.total_days()
    gridded = (days / params.interval_days).ceil().cast(pl.Int32)
    persons = persons.with_columns(group.alias("group")).filter(
        pl.col("group").is_not_null() & (days >= 0)
    )
    persons = persons.with_columns(
        pl.min_horizontal(gridded, pl.lit(last)).alias("interval"),
        (pl.col("event_date").is_not_null() & (gridded <= last)).alias("event"),
    )
    return persons.select("person_id", "group", "interval", "event")


def logrank(partial: pa.Table) -> dict[str, float]:
    """The log-rank test over the groups of a merged survival partial (chi², df, p)."""
    from statistics import NormalDist

    groups = _by_group(partial)
    names = sorted(groups)
    intervals = sorted({int(k) for g in groups.values() for k in g["interval"]})
    index = {k: i for i, k in enumerate(intervals)}
    n = np.zeros((len(names), len(intervals)))
    d = np.zeros_like(n)
    grid = np.asarray(intervals)
    for gi, name in enumerate(names):
        rows = groups[name]
        left_before = np.concatenate([[0.0], np.cumsum(rows["leaving"])])
        n[gi] = rows["total"] - left_before[np.searchsorted(rows["interval"], grid, side="left")]
        d[gi, [index[int(k)] for k in rows["interval"]]] = rows["events"]
    total_n, total_d = n.sum(axis=0), d.sum(axis=0)
    keep = total_n > 1
    n, d, total_n, total_d = n[:, keep], d[:, keep], total_n[keep], total_d[keep]
    expected = n * total_d / total_n
    observed_minus = (d - expected).sum(axis=1)[:-1]
    factor = total_d * (total_n - total_d) / (total_n**2 * (total_n - 1))
    k = len(names) - 1
    variance = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            cross = n[a] * total_n * (a == b) - n[a] * n[b]
            variance[a, b] = np.sum(factor * cross)
    chi2 = float(observed_minus @ np.linalg.solve(variance, observed_minus))
    p = 2 * (1 - NormalDist().cdf(math.sqrt(chi2))) if k == 1 else _chi2_sf(chi2, k)
    return {"chi2": chi2, "df": float(k), "p_value": p}


def _chi2_sf(x: float, k: int) -> float:
    """Upper tail of the chi-squared distribution (regularized incomplete gamma, by series)."""
    a, t = k / 2, x / 2
    term = total = 1 / a
    for i in range(1, 1000):
        term *= t / (a + i)
        total += term
        if term < total * 1e-16:
            break
    lower = total * math.exp(-t + a * math.log(t) - math.lgamma(a)) if t > 0 else 0.0
    return max(0.0, 1 - lower)


def _by_group(partial: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    frame = _frame(partial).sort("group", "interval")
    out: dict[str, dict[str, np.ndarray]] = {}
    for (group,), rows in frame.group_by("group", maintain_order=True):
        events = rows["events"].to_numpy().astype(float)
        censored = rows["censored"].to_numpy().astype(float)
        out[str(group)] = {
            "interval": rows["interval"].to_numpy(),
            "events": events,
            "censored": censored,
            "leaving": events + censored,
            "total": np.float64(events.sum() + censored.sum()),  # type: ignore[dict-item]
        }
    return out


def _first(tables: Mapping[str, pa.Table], variable: Variable, alias: str) -> pl.DataFrame:
    from flows.analyses.cohort import DOMAINS

    table, concept, when = DOMAINS[variable.domain]
    concepts = concept_set(tables, variable.concept_ids, variable.include_descendants)
    events = _frame(tables[table]).filter(pl.col(concept).is_in(concepts.implode()))
    return events.group_by("person_id").agg(pl.col(when).min().alias(alias))


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _normal_quantile(q: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)
