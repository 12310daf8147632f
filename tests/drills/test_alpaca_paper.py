"""Drill: ``examples/session-alpaca-paper.yaml`` passes its pre-market checks on recorded Alpaca traffic.

The example session runs on the whole local platform as written — broker ``alpaca`` (paper), the
five symbols, the model strategy with inference (cuda asked, cpu here: the worker falls back), one
executor, ``onHalt: FlattenPositions`` — with three changes a drill needs: a simulated clock starting
in PreMarket, the drill's RiskPolicy (named ``default-limits`` as the example expects) and the drill's
Secret of broker keys. Alpaca's servers are replaced on loopback, and only they:

* the Trading API by ``FakeAlpaca`` (recorded account, positions, orders, activities), through
  ``TRADING_ALPACA_TRADING_URL``: the executor's alpaca-py TradingClient connects and syncs with it;
* the stock data stream by ``StreamReplay`` (the handshake and the recorded quote frames, msgpack),
  through ``TRADING_ALPACA_STREAM_URL``: the market-data role's alpaca-py StockDataStream subscribes;
* the stock snapshots endpoint by ``Snapshots`` (``TRADING_ALPACA_DATA_URL``), the REST fallback.

The checklist must pass from the real state — workers ready, policy applied, live trading allowed
(paper), broker reachable, every symbol quoted — and the session must open.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.drills.harness import BROKER_KEY_ID, BROKER_SECRET, Drill
from tests.fixtures.alpaca import FakeAlpaca, Snapshots, StreamReplay
from tests.fixtures.waiting import eventually_sync
from trading_dev.platform import LocalPlatform
from trading_workers import bus as bus_mod
from trading_workers.brokers.alpaca import ENV_TRADING_URL
from trading_workers.brokers.alpaca_data import ENV_DATA_URL, ENV_STREAM_URL

pytestmark = [pytest.mark.drill, pytest.mark.e2e]
EXAMPLE = ROOT / "examples" / "session-alpaca-paper.yaml"


@pytest.fixture
def alpaca(platform: LocalPlatform) -> Iterator[tuple[FakeAlpaca, StreamReplay, Snapshots]]:
    """Alpaca's servers on loopback, and the platform's workers pointed at them while the drill runs."""
    assert platform.runtime is not None
    with FakeAlpaca().running() as trading, StreamReplay(interval=0.5).running() as stream, \
            Snapshots().running() as rest:
        urls = {ENV_TRADING_URL: trading.url, ENV_STREAM_URL: stream.url, ENV_DATA_URL: rest.url}
        platform.runtime.extra_env.update(urls)
        try:
            yield trading, stream, rest
        finally:
            for name in urls:
                platform.runtime.extra_env.pop(name, None)


def example_spec() -> tuple[str, dict[str, Any]]:
    doc = yaml.safe_load(pathlib.Path(EXAMPLE).read_text())
    return doc["metadata"]["name"], doc["spec"]


def test_the_alpaca_paper_example_passes_its_pre_market_checks_on_recorded_traffic(
        make_drill: Callable[..., Drill], alpaca: tuple[FakeAlpaca, StreamReplay, Snapshots]) -> None:
    trading, stream, _ = alpaca
    name, spec = example_spec()
    assert spec["broker"] == {"kind": "alpaca", "paper": True, "credentialsSecretRef": {"name": "alpaca-paper"}}
    spec["broker"]["credentialsSecretRef"] = {"name": BROKER_SECRET}   # the drill's Secret of keys
    spec.pop("clock")                                                   # the drill's simulated clock
    spec["workers"] = {**spec["workers"], "strategy": {"replicas": 1},  # as the example: no role at zero
                       "inference": {**spec["workers"]["inference"], "replicas": 1}}
    d = make_drill(name=name, policy_name=spec["riskPolicyRef"]["name"], symbols=spec["symbols"], spec=spec,
                   at="2026-11-24T09:24:00", speed=10.0, wait=None)
    try:
        d.wait_phase("PreMarket", timeout=60)
        checks = d.wait_condition("PreMarketChecks", "True", reason="ChecksPassed", timeout=150)
        st = d.wait_phase("MarketOpen", timeout=90)
        assert {"workers ready", "broker reachable", "market data fresh"} <= set(_checks(checks["message"])), checks
        for cond, reason in (("BrokerConnected", "Connected"), ("DataFresh", "QuotesFresh"),
                             ("PolicyApplied", "PolicyApplied"), ("LiveTradingAllowed", "Paper")):
            got = d.condition(cond, st)
            assert got is not None and (got["status"], got["reason"]) == ("True", reason), (cond, got)
        workers = st["workers"]
        assert all(w["ready"] == w["desired"] == 1 for w in workers.values()), workers

        # The executor's alpaca-py TradingClient: the paper account, read with the Secret's key.
        account = trading.calls("GET", "/v2/account")
        assert account and account[0].headers.get("APCA-API-KEY-ID") == BROKER_KEY_ID
        assert trading.calls("GET", "/v2/orders")   # the broker sync's open orders
        # The market-data role's alpaca-py stream: authenticated, subscribed to the example's symbols,
        # and the recorded quotes (bid/ask midpoints) on the session's bus for every symbol.
        assert stream.auth and stream.auth[0]["key"] == BROKER_KEY_ID
        assert sorted(stream.subscribed[0]["quotes"]) == sorted(spec["symbols"])
        prices = eventually_sync(lambda: _prices(d, spec["symbols"]), timeout=30, what="a quote per symbol")
        assert prices["GOOGL"] == pytest.approx((171.82 + 171.90) / 2)
        assert prices["TSLA"] == pytest.approx((238.70 + 238.95) / 2)
    finally:
        d.delete()   # while Alpaca's stand-ins still answer (onHalt: FlattenPositions)


def _checks(message: str) -> list[str]:
    return [part.strip() for part in message.replace(":", ",").split(",")]


def _prices(d: Drill, symbols: list[str]) -> dict[str, float] | None:
    entries = d.redis.xrevrange(f"{d.prefix}:stream:{bus_mod.MARKET_DATA}", count=200)
    last: dict[str, float] = {}
    for _, fields in reversed(entries):
        quote = bus_mod.decode_quote(fields)  # type: ignore[arg-type]
        last[quote.symbol] = quote.price
    return last if set(symbols) <= set(last) else None
