"""What the detail page shows of a held output: the request, the airlock's checks, the aggregate.

Only what the airlock would release is shown: the aggregate table after suppression (the held
result itself, never rows of the site's data). Suppressed cells are empty (null) in that table
and are marked as such.
"""

from __future__ import annotations

import math
from typing import Any

from governance.review import ReviewItem, ReviewState

__all__ = ["MAX_ROWS", "item_view"]

MAX_ROWS = 500
"""Rows of the held aggregate shown on the page (the count of the rest is given)."""

STATE_LABELS = {
    ReviewState.PENDING: "would be released",
    ReviewState.APPROVED: "approved for release",
    ReviewState.REJECTED: "rejected, not released",
}
OUTCOME_LABELS = {
    "released": "passes the disclosure checks",
    "released_with_suppression": "passes the disclosure checks with suppressed cells",
}


def _cell(value: Any) -> str | None:
    """A cell as shown; None for an empty (suppressed) cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def item_view(item: ReviewItem) -> dict[str, Any]:
    """The template context of one held output."""
    table = item.table()
    rows = [[_cell(v) for v in row.values()] for row in table.slice(0, MAX_ROWS).to_pylist()]
    empty = sum(table.column(i).null_count for i in range(table.num_columns))
    facts = [
        ("Job", item.job_id),
        ("Request", item.request_id),
        ("Analysis", f"{item.analysis} ({item.output_kind})"),
        ("Dataset", item.dataset),
        ("Researcher", item.researcher),
        ("Project", item.project),
        ("Purpose", item.purpose),
        ("Held since", item.created_at[:19].replace("T", " ") + " UTC"),
        ("Result digest", item.result_digest),
    ]
    return {
        "item": item,
        "pending": item.state is ReviewState.PENDING,
        "state_label": STATE_LABELS[item.state],
        "outcome_label": OUTCOME_LABELS.get(item.outcome, item.outcome),
        "facts": facts,
        "columns": table.column_names,
        "rows": rows,
        "total_rows": table.num_rows,
        "hidden_rows": max(0, table.num_rows - MAX_ROWS),
        "empty_cells": empty,
    }
