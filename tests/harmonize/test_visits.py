"""Encounters grouped into visits by the ETL-Synthea rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from harmonize.visits import VisitGroups, canonical_classes, group_encounters

US_PER_DAY = 86_400_000_000


def _group(rows: list[tuple[int, int, int, str]], *, merge: bool = True) -> VisitGroups:
    """rows: (person, start day, end day, class), sorted by person and start."""
    person = np.array([r[0] for r in rows])
    start = np.array([r[1] for r in rows])
    end = np.array([r[2] for r in rows])
    times = start * US_PER_DAY + np.arange(len(rows))  # distinct start times
    classes = canonical_classes(pa.array([r[3] for r in rows]))
    return group_encounters(person, start, end, times, classes, merge=merge)


def test_overlapping_and_touching_stays_collapse() -> None:
    groups = _group(
        [
            (1, 10, 12, "inpatient"),
            (1, 11, 15, "inpatient"),  # overlaps the first
            (1, 16, 17, "IMP"),  # starts the day after: touches, same stay (FHIR class code)
            (1, 19, 20, "inpatient"),  # a gap of one day: a new stay
            (2, 10, 12, "inpatient"),  # another person: a new stay
        ]
    )
    assert groups.group.tolist() == [0, 0, 0, 1, 2]
    assert groups.inpatient.tolist() == [True, True, True]


def test_one_day_encounters_inside_a_stay_join_it() -> None:
    groups = _group(
        [
            (1, 10, 10, "emergency"),  # one day, before the stay: its own ER visit
            (1, 10, 13, "emergency"),  # multi-day ER: an inpatient stay that began in the ER
            (1, 12, 12, "ambulatory"),  # inside the stay
            (1, 20, 20, "wellness"),  # after: its own visit
        ]
    )
    stay = groups.group[1]
    assert groups.group[2] == stay
    assert groups.inpatient[stay] and groups.er_start[stay]
    assert groups.group[0] == stay  # starts on the stay's first day: inside it
    assert groups.group[3] != stay and not groups.inpatient[groups.group[3]]


def test_duplicate_outpatient_encounters_merge_and_merge_can_be_off() -> None:
    person = np.array([1, 1, 1])
    day = np.array([5, 5, 5])
    times = np.array([100, 100, 200])
    classes = pa.array(["wellness", "wellness", "wellness"])
    merged = group_encounters(person, day, day, times, classes)
    assert merged.group.tolist() == [0, 0, 1]
    separate = group_encounters(person, day, day, times, classes, merge=False)
    assert separate.group.tolist() == [0, 1, 2]
