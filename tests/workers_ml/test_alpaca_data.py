"""Alpaca market data through alpaca-py's real stream and REST code, with only the network replaced.

A loopback websocket server speaks the stream's protocol (msgpack frames: connected, auth,
subscription, quotes) with recorded quote messages; a loopback HTTP server answers the snapshots
endpoint with a recorded body. The market-data role publishes to a real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve

from tests.fixtures.alpaca import DATA, StreamReplay
from trading_dev import services
from trading_workers import bus as bus_mod
from trading_workers.brokers import alpaca_data

KEY_ID, SECRET = "PKTEST1234567890ABCD", "s3cr3t-never-in-logs-9f8e7d6c5b4a"


def _timestamp(text: str) -> msgpack.Timestamp:
    return msgpack.Timestamp.from_datetime(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


class FakeStream:
    """Alpaca's quote stream on loopback: the handshake alpaca-py expects, then the recorded quotes."""

    def __init__(self) -> None:
        self.subscribed: list[Any] = []
        self.auth: list[Any] = []
        self.connections = 0
        self.port = 0
        self.server: Any = None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        await ws.send(msgpack.packb([{"T": "success", "msg": "connected"}]))
        self.auth.append(msgpack.unpackb(await ws.recv()))
        await ws.send(msgpack.packb([{"T": "success", "msg": "authenticated"}]))
        subscribe = msgpack.unpackb(await ws.recv())
        self.subscribed.append(subscribe)
        await ws.send(msgpack.packb([{"T": "subscription", "quotes": subscribe.get("quotes", [])}]))
        frames = json.loads((DATA / "stream_quotes.json").read_text())
        for frame in frames:
            await ws.send(msgpack.packb([{**frame, "t": _timestamp(frame["t"])}], datetime=False))
            await asyncio.sleep(0.05)
        await ws.wait_closed()

    async def start(self) -> FakeStream:
        self.server = await serve(self.handler, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@dataclass
class FakeRest:
    requests: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> FakeRest:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                body = (DATA / "snapshots.json").read_bytes() if "/stocks/snapshots" in self.path else b"{}"
                self.send_response(200 if "/stocks/snapshots" in self.path else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


class Health:
    def __init__(self) -> None:
        self.checks: dict[str, Any] = {}

    def add(self, name: str, check: Any) -> None:
        self.checks[name] = check


@dataclass
class Rt:
    """The parts of the worker Runtime the market-data role uses."""

    redis_url: str
    symbols: list[str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    health: Health = field(default_factory=Health)
    kube: Any = None
    redis_prefix: str = "t:alpaca-data"

    @property
    def settings(self) -> Any:
        return type("S", (), {"redis_url": self.redis_url})()

    @property
    def config(self) -> Any:
        return type("C", (), {"symbols": self.symbols})()

    async def sleep(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        return self.stop.is_set()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with services.running_redis("redis-alpaca-data") as server:
        yield server.url


@pytest.fixture
async def rest() -> AsyncIterator[FakeRest]:
    fake = FakeRest().start()
    yield fake
    fake.stop()


async def _quotes(bus: bus_mod.Bus) -> list[Any]:
    entries = await bus.latest(bus_mod.MARKET_DATA, 100)
    return [bus_mod.decode_quote(fields) for _, fields in entries]


async def _eventually(probe: Any, timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if value := await probe():
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_stream_quotes_reach_the_bus_and_rest_fills_a_silent_feed(
        redis_url: str, rest: FakeRest, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = await FakeStream().start()
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv(alpaca_data.ENV_STREAM_URL, f"ws://127.0.0.1:{stream.port}")
    monkeypatch.setenv(alpaca_data.ENV_DATA_URL, rest.url)
    monkeypatch.setattr(alpaca_data, "FALLBACK_AFTER", 3.0)
    monkeypatch.setattr(alpaca_data, "POLL_EVERY", 0.2)
    rt = Rt(redis_url, ["AAPL", "MSFT", "NVDA"])
    # The test's own reader: patient (bus.connect fails fast on purpose, and this machine may be loaded).
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=15, socket_timeout=15)
    bus = bus_mod.Bus(client, rt.redis_prefix)
    task = asyncio.create_task(alpaca_data.run_market_data(rt))
    try:
        # The stream: alpaca-py authenticated with the keys, subscribed to the session's symbols, and
        # each recorded quote became a bus quote at the bid/ask midpoint.
        streamed = await _eventually(lambda: _streamed(bus), 20, "streamed quotes")
        assert stream.auth[0] == {"action": "auth", "key": KEY_ID, "secret": SECRET}
        assert sorted(stream.subscribed[0]["quotes"]) == ["AAPL", "MSFT", "NVDA"]
        # In order, as streamed (the stream has FALLBACK_AFTER seconds before REST fills in).
        assert streamed["AAPL"][:2] == pytest.approx([(189.01 + 189.05) / 2, (189.03 + 189.07) / 2])
        assert streamed["MSFT"][0] == pytest.approx((412.30 + 412.40) / 2)
        ok, _ = rt.health.checks["alpaca-data"]()
        assert ok
        # NVDA never streams: the REST snapshots endpoint is asked for it, and not for the others.
        await _eventually(lambda: _async(any("NVDA" in p for p in rest.requests)), 10, "a REST request for NVDA")
        first = next(p for p in rest.requests if "NVDA" in p)
        assert "AAPL" not in first and "MSFT" not in first, first
        assert first.startswith("/v2/stocks/snapshots?"), first   # alpaca-py's get_stock_snapshot
        # The stream goes away: REST keeps every symbol quoted, newer than what was streamed.
        await stream.stop()
        quotes = await _eventually(lambda: _with_rest_prices(bus), 20, "REST quotes")
        assert quotes["AAPL"] == pytest.approx((189.1 + 189.2) / 2)
        assert quotes["MSFT"] == pytest.approx((412.7 + 412.9) / 2)
        # Never an older quote after a newer one, whatever the source.
        seqs: dict[str, list[int]] = {}
        for quote in await _quotes(bus):
            seqs.setdefault(quote.symbol, []).append(quote.seq)
        assert all(s == sorted(set(s)) for s in seqs.values()), seqs
    finally:
        rt.stop.set()
        await asyncio.wait_for(task, timeout=20)
        await client.aclose()
        if stream.server is not None:
            stream.server.close()


async def _async(value: Any) -> Any:
    return value


async def _streamed(bus: bus_mod.Bus) -> dict[str, list[float]] | None:
    seen: dict[str, list[float]] = {}
    for quote in await _quotes(bus):
        seen.setdefault(quote.symbol, []).append(quote.price)
    return seen if len(seen.get("AAPL", [])) >= 2 and seen.get("MSFT") else None


async def _with_rest_prices(bus: bus_mod.Bus) -> dict[str, float] | None:
    last: dict[str, float] = {}
    for quote in await _quotes(bus):
        last[quote.symbol] = quote.price
    return last if last.get("AAPL", 0) > 189.1 and last.get("MSFT", 0) > 412.6 else None


def test_midpoint() -> None:
    assert alpaca_data.midpoint(10.0, 10.2) == pytest.approx(10.1)
    assert alpaca_data.midpoint(0.0, 10.2) == 10.2 and alpaca_data.midpoint(10.0, 0.0) == 10.0
    assert alpaca_data.midpoint(0.0, 0.0) is None


async def test_a_dropped_stream_is_reconnected_by_alpaca_py_and_quotes_resume(
        redis_url: str, rest: FakeRest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream server closes every connection after two quotes: alpaca-py reconnects (with its backoff,
    from 1 s), authenticates and subscribes again, and the newer quotes reach the bus."""
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv(alpaca_data.ENV_DATA_URL, rest.url)
    rt = Rt(redis_url, ["AAPL", "MSFT"], redis_prefix="t:alpaca-reconnect")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=15, socket_timeout=15)
    bus = bus_mod.Bus(client, rt.redis_prefix)
    with StreamReplay(interval=0.2, drop_after=2).running() as stream:
        monkeypatch.setenv(alpaca_data.ENV_STREAM_URL, stream.url)
        task = asyncio.create_task(alpaca_data.run_market_data(rt))
        try:
            await _eventually(lambda: _async(stream.connections >= 3), 30, "two reconnects")
            assert len(stream.subscribed) >= 3 and all(sorted(s["quotes"]) == ["AAPL", "MSFT"]
                                                        for s in stream.subscribed)
            assert all(a == {"action": "auth", "key": KEY_ID, "secret": SECRET} for a in stream.auth)
            quotes = await _eventually(lambda: _at_least(bus, 5), 20, "quotes from several connections")
            seqs = [q.seq for q in quotes if q.symbol == "AAPL"]
            assert seqs == sorted(set(seqs)) and len(seqs) >= 3   # each connection's quotes newer than the last
        finally:
            rt.stop.set()
            await asyncio.wait_for(task, timeout=20)
            await client.aclose()


async def _at_least(bus: bus_mod.Bus, n: int) -> list[Any] | None:
    quotes = await _quotes(bus)
    return quotes if len(quotes) >= n else None
