"""Retries: tenacity, jittered exponential backoff, bounded in time, only for ``TransientError``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity

from trading_workers.errors import TransientError

T = TypeVar("T")


def retrying(*, max_delay: float = 30.0, max_wait: float = 5.0, initial: float = 0.1) -> tenacity.AsyncRetrying:
    """Retry ``TransientError`` with jittered exponential backoff, for at most ``max_delay`` seconds."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        wait=tenacity.wait_random_exponential(multiplier=initial, max=max_wait),
        stop=tenacity.stop_after_delay(max_delay),
        reraise=True,
    )


async def with_retries(fn: Callable[[], Awaitable[T]], *, max_delay: float = 30.0, max_wait: float = 5.0) -> T:
    async for attempt in retrying(max_delay=max_delay, max_wait=max_wait):
        with attempt:
            return await fn()
    raise AssertionError("unreachable")  # pragma: no cover
