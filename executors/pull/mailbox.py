"""The relay's mailbox: calls wait here per site until that site's agent fetches them.

Everything runs on the relay's event loop (asyncio). An orchestrator's call waits in its
site's queue (at most ``max_queued`` per site); the site's agent, long-polling, takes it and
later answers it; the orchestrator's request, held open meanwhile, returns the reply. A call
is never handed to a site other than the one it was queued for, and only that site may answer
it. A site whose agent has not polled for ``offline_after_s`` is offline: its calls fail at
once, so a flow learns within its step's timeout that the site is unavailable.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from executors.errors import JobNotFound, SiteUnavailable
from executors.pull.messages import Call, Reply
from fedflow.core import InvalidRequest

__all__ = ["Mailbox"]

_DISCONNECT_CHECK_S = 0.5


@dataclass
class _Pending:
    call: Call
    site: str
    reply: asyncio.Future[Reply]
    delivered: bool = False


@dataclass
class _Box:
    queue: deque[_Pending] = field(default_factory=deque)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    polling: int = 0
    seen: float = float("-inf")


class Mailbox:
    """Per-site queues of calls and the replies the orchestrators wait for."""

    def __init__(
        self, sites: Iterable[str], *, max_queued: int = 64, offline_after_s: float = 10.0
    ) -> None:
        self._boxes = {site: _Box() for site in sites}
        self._pending: dict[str, _Pending] = {}
        self.max_queued = max_queued
        self.offline_after_s = offline_after_s

    def online(self, site: str) -> bool:
        """Whether the site's agent is polling now or polled within ``offline_after_s``."""
        box = self._boxes[site]
        return box.polling > 0 or time.monotonic() - box.seen <= self.offline_after_s

    async def call(self, site: str, call: Call) -> Reply:
        """Queue ``call`` for ``site`` and wait up to ``call.timeout`` s for its reply."""
        box = self._boxes.get(site)
        if box is None:
            raise SiteUnavailable("the relay serves no such site", site=site, reason="unknown")
        if not self.online(site):
            raise SiteUnavailable(
                f"the site's agent has not polled the relay for over {self.offline_after_s:g} s",
                site=site,
                reason="offline",
            )
        if len(box.queue) >= self.max_queued:
            raise SiteUnavailable(
                f"{self.max_queued} calls already wait for this site; retry later",
                site=site,
                reason="busy",
            )
        if call.call_id in self._pending:
            raise InvalidRequest("a call with this id is already waiting", site=site)
        pending = _Pending(call, site, asyncio.get_running_loop().create_future())
        self._pending[call.call_id] = pending
        async with box.arrived:
            box.queue.append(pending)
            box.arrived.notify()
        try:
            return await asyncio.wait_for(asyncio.shield(pending.reply), call.timeout)
        except TimeoutError:
            what = "did not answer" if pending.delivered else "did not fetch the call"
            raise SiteUnavailable(
                f"the site {what} within {call.timeout:g} s", site=site, reason="timeout"
            ) from None
        finally:
            self._pending.pop(call.call_id, None)
            if not pending.reply.done():
                pending.reply.cancel()

    async def take(
        self, site: str, wait: float, disconnected: Callable[[], Awaitable[bool]]
    ) -> Call | None:
        """The next call for ``site``, waiting up to ``wait`` s; ``None`` when there is none.

        ``disconnected`` tells whether the polling agent has gone, so that a call is not
        handed to a connection nobody reads.
        """
        box = self._boxes[site]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        box.polling += 1
        box.seen = time.monotonic()
        try:
            async with box.arrived:
                while True:
                    while box.queue and box.queue[0].reply.done():
                        box.queue.popleft()  # its orchestrator stopped waiting
                    if box.queue:
                        if await disconnected():
                            return None
                        pending = box.queue.popleft()
                        pending.delivered = True
                        return pending.call
                    left = deadline - loop.time()
                    if left <= 0:
                        return None
                    try:
                        await asyncio.wait_for(box.arrived.wait(), min(left, _DISCONNECT_CHECK_S))
                    except TimeoutError:
                        if await disconnected():
                            return None
        finally:
            box.polling -= 1
            box.seen = time.monotonic()

    def answer(self, site: str, reply: Reply) -> None:
        """Hand ``reply`` to the orchestrator waiting for it; only the call's site may answer."""
        pending = self._pending.get(reply.call_id)
        if pending is None or pending.site != site or not pending.delivered:
            raise JobNotFound("no call with this id awaits this site's reply", site=site)
        if not pending.reply.done():
            pending.reply.set_result(reply)
