"""Prefect table artifacts, published at once or, during a fit's rounds, in the background.

Every federated step publishes its per-site outcome tables (:mod:`flows.federated`), and each
is a blocking call to the Prefect API. A fit publishes them every round, so inside
:func:`deferred` the calls go to one background thread, in order and with the caller's context
(they attach to the same flow and task runs), while the next round runs at the sites. The
block's end waits for every call and raises the first failure: nothing is left unpublished
when the block, and with it the fit's flow, returns.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import create_table_artifact

__all__ = ["deferred", "table_artifact"]

_PENDING: contextvars.ContextVar[tuple[ThreadPoolExecutor, list[Future[Any]]] | None] = (
    contextvars.ContextVar("fedflow_deferred_artifacts", default=None)
)


def table_artifact(*, key: str, table: list[dict[str, Any]], description: str) -> None:
    """Publish a table artifact now, or in the background inside :func:`deferred`."""
    pending = _PENDING.get()
    if pending is None:
        create_table_artifact(key=key, table=table, description=description)
        return
    pool, futures = pending
    context = contextvars.copy_context()
    futures.append(
        pool.submit(
            context.run, create_table_artifact, key=key, table=table, description=description
        )
    )


@contextmanager
def deferred() -> Iterator[None]:
    """Publish the block's table artifacts in one background thread; wait for them at its end."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="artifacts")
    futures: list[Future[Any]] = []
    token = _PENDING.set((pool, futures))
    try:
        yield
    finally:
        _PENDING.reset(token)
        pool.shutdown(wait=True)
    for future in futures:
        future.result()
