"""Fixtures for the model and Alpaca tests: a virtual clock and a fake Alpaca server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.fixtures.alpaca import FakeAlpaca


class VirtualClock:
    """A clock that only moves when someone sleeps on it: rate and backoff tests run in no real time."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def fake_alpaca(clock: VirtualClock) -> Iterator[FakeAlpaca]:
    with FakeAlpaca(clock=clock).running() as fake:
        yield fake
