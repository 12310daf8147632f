"""Alpaca market data for the market-data worker: alpaca-py's quote stream, REST snapshots as fallback.

Why each piece is here:

- **The stream first.** alpaca-py's ``StockDataStream`` (websocket, msgpack) delivers quotes as they
  happen; it reconnects by itself with an escalating backoff, and with ``data_timeout`` it treats a
  connected-but-mute socket as dead. Each quote becomes a bus ``Quote`` at the bid/ask midpoint.
- **REST snapshots as fallback.** A symbol without a streamed quote for ``FALLBACK_AFTER`` seconds (the
  stream is down, reconnecting, or the feed is thin) is filled in from its snapshot's latest quote
  (``StockHistoricalDataClient.get_stock_snapshot``, GET /v2/stocks/snapshots), so the risk worker's freshness check and
  the pre-market checklist see real prices rather than silence. The source of every quote is counted.
- **Ordering.** ``seq`` is the quote's own timestamp in microseconds, so consumers that drop
  non-increasing sequences (strategy, inference) drop a REST quote older than one already streamed.
- **Credentials** from the environment (the session's Secret), as for the trading adapter.
  ``TRADING_ALPACA_STREAM_URL`` / ``TRADING_ALPACA_DATA_URL`` point alpaca-py elsewhere; the tests
  use them to serve recorded frames and responses on loopback (alpaca-py's own code still parses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from alpaca.data.enums import DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.live.stock import StockDataStream
from alpaca.data.requests import StockSnapshotRequest

from trading_operator.api import metric_names as mn
from trading_operator.api import workerconfig
from trading_workers import bus as bus_mod
from trading_workers.domain import Quote
from trading_workers.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

ENV_STREAM_URL = "TRADING_ALPACA_STREAM_URL"
ENV_DATA_URL = "TRADING_ALPACA_DATA_URL"
ENV_FEED = "TRADING_ALPACA_FEED"
FALLBACK_AFTER = 10.0     # seconds without a streamed quote before REST fills in a symbol
POLL_EVERY = 2.0          # how often the fallback looks for silent symbols
STREAM_DATA_TIMEOUT = 30.0
QUOTES = mn.collector(mn.ALPACA_QUOTES)


def midpoint(bid: float, ask: float) -> float | None:
    """The bid/ask midpoint; one side if the other is missing; None without a price."""
    if bid > 0 and ask > 0:
        return (bid + ask) / 2.0
    if bid > 0 or ask > 0:
        return max(bid, ask)
    return None


class QuoteRelay:
    """Turns alpaca-py quote models into bus quotes; remembers when each symbol last had one."""

    def __init__(self, publish: Callable[[Quote], Awaitable[Any]], symbols: list[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.publish, self.symbols, self.clock = publish, symbols, clock
        # Counted from the start: the stream gets FALLBACK_AFTER seconds to deliver before REST fills in.
        self.seen: dict[str, float] = {}
        self.started = clock()
        self.last_seq: dict[str, int] = {}
        # The stream and the REST fallback relay concurrently: the newer-than check and the publish
        # must not interleave, or an older quote could follow a newer one onto the bus.
        self._lock = asyncio.Lock()

    async def relay(self, quote: Any, source: str) -> bool:
        price = midpoint(float(quote.bid_price or 0), float(quote.ask_price or 0))
        if price is None:
            return False
        ts = quote.timestamp.timestamp()
        seq = int(ts * 1_000_000)
        async with self._lock:
            if seq <= self.last_seq.get(quote.symbol, 0):
                return False  # not newer than what was already published
            await self.publish(Quote(symbol=quote.symbol, price=round(price, 6), ts=ts, seq=seq))
            self.last_seq[quote.symbol] = seq
            self.seen[quote.symbol] = self.clock()
        QUOTES.labels(source).inc()
        return True

    def silent(self, after: float) -> list[str]:
        now = self.clock()
        return [s for s in self.symbols if now - self.seen.get(s, self.started) > after]


def _credentials() -> tuple[str, str]:
    key, secret = os.environ.get(workerconfig.ENV_BROKER_KEY_ID), os.environ.get(workerconfig.ENV_BROKER_SECRET)
    if not key or not secret:
        raise ConfigError("alpaca market data needs the session's API keys in the environment "
                          f"({workerconfig.ENV_BROKER_KEY_ID}, {workerconfig.ENV_BROKER_SECRET})")
    return key, secret


async def run_market_data(rt: Any) -> None:
    """The market-data role for ``broker.kind: alpaca``."""
    from trading_workers.market_data import reference_symbols  # imports this module: not at the top

    key, secret = _credentials()
    symbols = list(dict.fromkeys([*rt.config.symbols, *await reference_symbols(rt)]))
    client = bus_mod.connect(rt.settings.redis_url)
    bus = bus_mod.Bus(client, rt.redis_prefix)

    async def publish(quote: Quote) -> None:
        await bus.publish(bus_mod.MARKET_DATA, bus_mod.encode_quote(quote))

    relay = QuoteRelay(publish, symbols)
    rt.health.add("alpaca-data", lambda: (bool(relay.seen), "no quote from Alpaca yet"))
    feed = DataFeed(os.environ.get(ENV_FEED, "iex"))
    stream = StockDataStream(key, secret, feed=feed, url_override=os.environ.get(ENV_STREAM_URL) or None,
                             data_timeout=STREAM_DATA_TIMEOUT)
    rest = StockHistoricalDataClient(key, secret, url_override=os.environ.get(ENV_DATA_URL) or None)

    async def on_quote(quote: Any) -> None:
        try:
            await relay.relay(quote, "stream")
        except TransientError as exc:
            log.warning("cannot publish a quote; dropped", extra={"error": str(exc)})

    stream.subscribe_quotes(on_quote, *symbols)
    streaming = asyncio.create_task(stream._run_forever(), name="alpaca-stream")
    log.info("alpaca market data started", extra={"symbols": len(symbols), "feed": feed.value})
    try:
        while not rt.stop.is_set():
            silent = relay.silent(FALLBACK_AFTER)
            if silent:
                try:
                    snapshots = await asyncio.to_thread(
                        rest.get_stock_snapshot, StockSnapshotRequest(symbol_or_symbols=silent, feed=feed))
                    for snapshot in snapshots.values():  # type: ignore[union-attr]
                        if snapshot.latest_quote is not None:
                            await relay.relay(snapshot.latest_quote, "rest")
                except TransientError as exc:
                    log.warning("cannot publish REST quotes; will retry", extra={"error": str(exc)})
                except Exception as exc:  # alpaca-py raises APIError, requests errors: retry next round
                    log.warning("alpaca snapshots failed; will retry", extra={"error": str(exc)[:300]})
            if streaming.done() and not rt.stop.is_set():
                ended = streaming.exception() if not streaming.cancelled() else None
                log.warning("alpaca stream ended; restarting", extra={"error": str(ended)[:300] if ended else ""})
                streaming = asyncio.create_task(stream._run_forever(), name="alpaca-stream")
            await rt.sleep(POLL_EVERY)
    finally:
        with contextlib.suppress(Exception):
            await stream.stop_ws()
        streaming.cancel()
        with contextlib.suppress(BaseException):
            await streaming
        await client.aclose()
