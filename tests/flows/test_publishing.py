"""Deferred artifacts: published in order in the background, all of them by the block's end."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flows import publishing


def test_deferred_artifacts_are_published_in_order_in_the_background_by_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, str]] = []
    api_answers = threading.Event()

    def blocking_create(*, key: str, table: list[dict[str, Any]], description: str) -> None:
        api_answers.wait(10)  # a blocking call to the Prefect API
        calls.append((key, threading.current_thread().name))

    monkeypatch.setattr(publishing, "create_table_artifact", blocking_create)
    with publishing.deferred():
        for i in range(3):
            publishing.table_artifact(key=f"round-{i}", table=[], description="")
        assert calls == []  # the caller went on without waiting for the API
        api_answers.set()
    assert [key for key, _ in calls] == ["round-0", "round-1", "round-2"]
    assert all(name.startswith("artifacts") for _, name in calls)
    publishing.table_artifact(key="after", table=[], description="")  # outside: at once
    assert calls[-1] == ("after", threading.current_thread().name)


def test_a_failed_deferred_artifact_is_raised_at_the_end_of_the_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(*, key: str, table: list[dict[str, Any]], description: str) -> None:
        raise RuntimeError(f"Prefect API refused {key}")

    monkeypatch.setattr(publishing, "create_table_artifact", failing)
    with pytest.raises(RuntimeError, match="refused round-0"), publishing.deferred():
        publishing.table_artifact(key="round-0", table=[], description="")
