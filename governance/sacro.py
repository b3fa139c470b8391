"""Export the review queue as a SACRO-compatible ``results.json`` (ACRO's output format).

ACRO (the SACRO project's output checker, PyPI ``acro``) writes, with ``finalise``, a folder
holding ``results.json`` and one CSV per output table; the SACRO viewer reads that folder.
We write the same layout with ACRO's field names (``acro/record.py``, ``finalise_json``, 1.0.2)::

    {"version": "1.0.2",
     "tool": {"@type": "SoftwareApplication", "name": "fedflow", ...},
     "results": {UID: {"uid", "status", "type", "properties", "files": [{"name", "sdc"}],
                       "outcome", "command", "summary", "timestamp", "comments",
                       "exception", "fair"}}}

Each held result is one output; its UID is the job id. ``status`` is ACRO's vocabulary:
``review`` while pending, ``pass`` once approved, ``fail`` once rejected. ``files`` names the
CSV of the table that would be (or was) released: aggregates after suppression, never rows.
``outcome`` holds, per column and row, ``ok`` or the reason a cell is withheld
(``suppressed``), as ACRO's outcome frame does. The custodian's decision is in ``comments``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv

from governance.review import ReviewItem, ReviewState

__all__ = ["ACRO_RESULTS_VERSION", "results_json", "write_results_json"]

ACRO_RESULTS_VERSION = "1.0.2"
"""The ACRO release whose ``results.json`` layout this export follows."""

_STATUS = {
    ReviewState.PENDING: "review",
    ReviewState.APPROVED: "pass",
    ReviewState.REJECTED: "fail",
}


def results_json(items: Sequence[ReviewItem], *, site: str) -> dict[str, Any]:
    """The ``results.json`` document for ``items`` (file names: ``<job_id>_0.csv``)."""
    results = {}
    for item in items:
        table = item.table()
        outcome: dict[str, dict[str, str]] = {
            column: {
                str(i): "suppressed" if value is None else "ok"
                for i, value in enumerate(table[column].to_pylist())
            }
            for column in table.column_names
        }
        comments = [f"site {site}: {reason}" for reason in item.reasons]
        if item.state is not ReviewState.PENDING:
            decision = f"{item.state.value} by {item.reviewer} at {item.decided_at}"
            comments.append(decision + (f": {item.reason}" if item.reason else ""))
        summary = _STATUS[item.state]
        if item.suppressed_cells:
            summary += f"; suppressed: {item.suppressed_cells} cells"
        results[item.job_id] = {
            "uid": item.job_id,
            "status": _STATUS[item.state],
            "type": item.output_kind,
            "properties": {
                "site": site,
                "analysis": item.analysis,
                "dataset": item.dataset,
                "project": item.project,
                "researcher": item.researcher,
                "purpose": item.purpose,
                "request_id": item.request_id,
                "airlock_outcome": item.outcome,
                "result_digest": item.result_digest,
            },
            "files": [
                {
                    "name": f"{item.job_id}_0.csv",
                    "sdc": {
                        "summary": {"suppressed": item.suppressed_cells > 0},
                        "cells": {"suppressed": item.suppressed_cells},
                    },
                }
            ],
            "outcome": outcome,
            "command": item.analysis,
            "summary": summary,
            "timestamp": item.created_at,
            "comments": comments,
            "exception": "",
            "fair": {},
        }
    return {
        "version": ACRO_RESULTS_VERSION,
        "tool": {"@type": "SoftwareApplication", "name": "fedflow", "site": site},
        "results": results,
    }


def write_results_json(items: Sequence[ReviewItem], out: Path, *, site: str) -> Path:
    """Write ``results.json`` to ``out`` and each item's table as a CSV beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    document = results_json(items, site=site)
    for item in items:
        pacsv.write_csv(item.table(), out.parent / f"{item.job_id}_0.csv")
    out.write_text(json.dumps(document, indent=4) + "\n")
    return out
