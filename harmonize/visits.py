"""Group encounters into visits the ETL-Synthea way.

ETL-Synthea (dbt-synthea ``int__ip_visits`` / ``int__op_visits`` / ``int__er_visits`` /
``int__assign_all_visit_ids``):

* inpatient encounters, and outpatient or ER encounters spanning more than one day, are
  collapsed per person into one inpatient visit wherever their date ranges overlap or touch
  (the next one starts no later than the day after the current one ends);
* a one-day encounter that starts inside such a stay belongs to it;
* the other encounters become one visit per (person, class, start time), duplicates merged.

``group_encounters`` does this with numpy over encounters sorted by person and start; with
``merge=False`` every encounter is its own visit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["CANONICAL_CLASS", "VisitGroups", "canonical_classes", "group_encounters"]

#: FHIR v3 ActCode encounter classes -> the Synthea class names the rules use.
CANONICAL_CLASS = {
    "amb": "ambulatory",
    "emer": "emergency",
    "imp": "inpatient",
    "acute": "inpatient",
}
_OUTPATIENT = ("ambulatory", "wellness", "outpatient")
_EMERGENCY = ("emergency", "urgentcare")
_SPAN = 10**7  # > any day number: person * _SPAN + day orders by person, then day


@dataclass(frozen=True)
class VisitGroups:
    """The visit of each encounter (0..n_visits-1) and which visits are inpatient stays."""

    group: np.ndarray
    inpatient: np.ndarray
    er_start: np.ndarray


def canonical_classes(classes: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Encounter classes lower-cased, FHIR ActCodes replaced by the Synthea names."""
    lower = pc.utf8_lower(pc.fill_null(classes, ""))
    known = pc.take(
        pa.array(list(CANONICAL_CLASS.values())),
        pc.index_in(lower, value_set=pa.array(list(CANONICAL_CLASS))),
    )
    merged = pc.coalesce(known, lower)
    return merged.combine_chunks() if isinstance(merged, pa.ChunkedArray) else merged


def _mask(classes: pa.Array, names: tuple[str, ...]) -> np.ndarray:
    return np.asarray(pc.is_in(classes, value_set=pa.array(names)).to_numpy(zero_copy_only=False))


def group_encounters(
    person: np.ndarray,
    start_day: np.ndarray,
    end_day: np.ndarray,
    start_time: np.ndarray,
    classes: pa.Array,
    *,
    merge: bool = True,
) -> VisitGroups:
    """Visit groups of encounters sorted by (person, start time); see the module doc.

    ``classes`` are canonical class names (:func:`canonical_classes`).
    """
    n = len(person)
    inpatient_class = _mask(classes, ("inpatient",))
    emergency = _mask(classes, _EMERGENCY)
    if not merge or n == 0:
        return VisitGroups(np.arange(n, dtype=np.int64), inpatient_class, emergency)
    person = person.astype(np.int64)
    ordinary = _mask(classes, (*_OUTPATIENT, *_EMERGENCY))
    multi = (inpatient_class | (ordinary & (start_day != end_day))) & (start_day <= end_day)
    group = np.full(n, -1, dtype=np.int64)

    m = np.flatnonzero(multi)
    # encounters are sorted by start time, hence by start day within each person
    mp, ms, me = person[m], start_day[m], end_day[m]
    running_end = np.maximum.accumulate(mp * _SPAN + me) - mp * _SPAN
    breaks = np.ones(len(m), dtype=bool)
    if len(m) > 1:
        breaks[1:] = (mp[1:] != mp[:-1]) | (ms[1:] > running_end[:-1] + 1)
    stay = np.cumsum(breaks) - 1
    group[m] = stay
    n_stays = int(breaks.sum())
    firsts = np.flatnonzero(breaks)
    stay_person, stay_start = mp[firsts], ms[firsts]
    stay_end = np.maximum.reduceat(me, firsts) if len(m) else me
    er_first = emergency[m][firsts] if len(m) else np.zeros(0, dtype=bool)

    single = np.flatnonzero(~multi)
    if n_stays and len(single):
        keys = stay_person * _SPAN + stay_start
        pos = np.searchsorted(keys, person[single] * _SPAN + start_day[single], side="right") - 1
        safe = np.clip(pos, 0, n_stays - 1)
        inside = (
            (pos >= 0)
            & (stay_person[safe] == person[single])
            & (start_day[single] <= stay_end[safe])
        )
        group[single[inside]] = pos[inside]
        single = single[~inside]

    if len(single):
        encoded = pc.dictionary_encode(classes).indices
        codes = np.asarray(encoded.to_numpy(zero_copy_only=False))[single]
        order = np.lexsort((codes, start_time[single], person[single]))
        s = single[order]
        c = codes[order]
        new = np.ones(len(s), dtype=bool)
        new[1:] = (
            (person[s][1:] != person[s][:-1])
            | (start_time[s][1:] != start_time[s][:-1])
            | (c[1:] != c[:-1])
        )
        group[s] = n_stays + np.cumsum(new) - 1
        n_rest = int(new.sum())
    else:
        n_rest = 0
    inpatient = np.r_[np.ones(n_stays, dtype=bool), np.zeros(n_rest, dtype=bool)]
    er_start = np.r_[er_first, np.zeros(n_rest, dtype=bool)]
    return VisitGroups(group, inpatient, er_start)
