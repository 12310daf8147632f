"""Ending a worker's tasks at shutdown: cancelled until they end, within a bound.

One ``cancel()`` is not always enough. redis-py can swallow a cancellation that lands while it is
between two commands (a tail that has just read an entry and is sending its next read): the task
goes on, blocked in the new read, and ``gather`` on it waits as long as the stream stays busy, or
for ever — the worker would then miss its final report and be SIGKILLed by the kubelet. Cancelling
again reaches the task where it handles cancellation (seen on this project's own loop,
``tests/workers/test_services.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_SECONDS = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], timeout: float = 5.0) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks``, cancelling again every ``RECANCEL_SECONDS`` those still running, until all
    ended or ``timeout``; the tasks still running then (a task's own exception is its own business)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_SECONDS, left))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: ending with an error at shutdown is no news
    return pending
