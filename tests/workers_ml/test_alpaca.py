"""The Alpaca adapter through alpaca-py's real client code, with only the network replaced.

Most tests point the TradingClient at a fake Alpaca on 127.0.0.1 (``url_override``);
the paper-endpoint tests instead mount a recording transport on the client's own
requests session, so the URL alpaca-py really builds is the one asserted.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from tests.fixtures.alpaca import FakeAlpaca, recorded
from tests.workers_ml.conftest import VirtualClock
from trading_operator.api.session import BrokerSpec
from trading_workers import domain
from trading_workers.brokers import alpaca
from trading_workers.brokers.base import Broker, BrokerError, OrderRejected
from trading_workers.errors import ConfigError

KEY_ID = "PKTEST1234567890ABCD"
SECRET = "s3cr3t-never-in-logs-9f8e7d6c5b4a"
ENV = {"APCA_API_KEY_ID": KEY_ID, "APCA_API_SECRET_KEY": SECRET}


class RecordingTransport(BaseAdapter):
    """A requests transport that records each prepared request and answers with a recorded body."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self.body = body
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(self.body).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def make_broker(fake: FakeAlpaca, clock: VirtualClock, **kwargs: Any) -> alpaca.AlpacaBroker:
    budget = kwargs.pop("budget", None) or alpaca.RequestBudget(clock=clock, sleep=clock.sleep)
    # Loopback answers in milliseconds; 2 s leaves room for a loaded machine without spurious retries.
    retry = kwargs.pop("retry", None) or alpaca.RetryPolicy(connect_timeout_s=2.0, read_timeout_s=2.0)
    return alpaca.AlpacaBroker(KEY_ID, SECRET, url_override=fake.url, budget=budget, retry=retry,
                               sleep=clock.sleep, **kwargs)


def market(signal: str, symbol: str = "AAPL", qty: float = 1, side: domain.Side = domain.Side.BUY) -> domain.Order:
    return domain.Order(client_order_id=domain.client_order_id("session-uid", signal), symbol=symbol,
                        side=side, qty=qty)


# ---------------------------------------------------------------- endpoint and credentials

async def test_paper_endpoint_is_the_default() -> None:
    transport = RecordingTransport(recorded("account"))
    broker = alpaca.AlpacaBroker.from_env(env=ENV, transport=transport)   # no paper flag, no override
    as_protocol: Broker = broker   # mypy checks the adapter against the protocol here
    assert as_protocol.name == "alpaca"
    assert broker.paper is True
    assert broker.base_url == alpaca.PAPER_URL == "https://paper-api.alpaca.markets"
    await broker.connect()
    (sent,) = transport.requests
    assert sent.url == "https://paper-api.alpaca.markets/v2/account"
    assert sent.headers["APCA-API-KEY-ID"] == KEY_ID          # credentials came from the environment
    assert broker.connected


async def test_session_spec_defaults_to_paper_and_live_must_be_explicit() -> None:
    spec = BrokerSpec.model_validate({"kind": "alpaca", "credentialsSecretRef": {"name": "alpaca-paper"}})
    transport = RecordingTransport(recorded("account"))
    paper = alpaca.AlpacaBroker.from_spec(spec, env=ENV, transport=transport)
    await paper.connect()
    assert transport.requests[-1].url == "https://paper-api.alpaca.markets/v2/account"

    live_spec = spec.model_copy(update={"paper": False})
    live = alpaca.AlpacaBroker.from_spec(live_spec, env=ENV, transport=transport)
    await live.connect()
    assert live.base_url == alpaca.LIVE_URL
    assert transport.requests[-1].url == "https://api.alpaca.markets/v2/account"

    with pytest.raises(ConfigError):
        alpaca.AlpacaBroker.from_spec(BrokerSpec(), env=ENV)   # kind: simulated


def test_missing_credentials_name_the_variable_not_the_value() -> None:
    with pytest.raises(ConfigError) as missing_both:
        alpaca.AlpacaBroker.from_env(env={})
    assert "APCA_API_KEY_ID" in str(missing_both.value) and "APCA_API_SECRET_KEY" in str(missing_both.value)
    with pytest.raises(ConfigError) as missing_secret:
        alpaca.AlpacaBroker.from_env(env={"APCA_API_KEY_ID": KEY_ID})
    assert KEY_ID not in str(missing_secret.value)


async def test_credentials_never_reach_logs_errors_or_repr(fake_alpaca: FakeAlpaca, clock: VirtualClock,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)   # every logger, urllib3's request logging included
    broker = make_broker(fake_alpaca, clock)
    fake_alpaca.fail_next("POST", "/v2/orders", status=500, after_create=True)
    await broker.submit(market("sig-log"))
    for _ in range(broker.retry.attempts):
        fake_alpaca.fail_next("GET", "/v2/account", status=503)
    with pytest.raises(BrokerError) as failure:
        await broker.connect()
    fake_alpaca.fail_next("POST", "/v2/orders", status=403, body="error_insufficient_buying_power")
    with pytest.raises(OrderRejected) as rejected:
        await broker.submit(market("sig-log-2"))
    assert caplog.records, "the retries above should have logged"
    for text in (caplog.text, repr(broker), str(failure.value), str(rejected.value)):
        assert SECRET not in text and KEY_ID not in text


# ---------------------------------------------------------------- idempotent submit

async def test_submit_retried_after_5xx_returns_the_existing_order(fake_alpaca: FakeAlpaca,
                                                                   clock: VirtualClock) -> None:
    broker = make_broker(fake_alpaca, clock)
    order = market("sig-1")
    fake_alpaca.fail_next("POST", "/v2/orders", status=500, after_create=True)   # created, but the answer is lost

    placed = await broker.submit(order)

    posts = fake_alpaca.calls("POST", "/v2/orders")
    assert len(posts) == 2
    assert {p.body["client_order_id"] for p in posts} == {order.client_order_id}
    assert fake_alpaca.orders_created == 1
    assert len(fake_alpaca.calls("GET", "/v2/orders:by_client_order_id")) == 1
    assert placed.client_order_id == order.client_order_id
    assert placed.broker_order_id == fake_alpaca.by_client[order.client_order_id]
    assert placed.status is domain.OrderStatus.ACCEPTED and placed.symbol == "AAPL" and placed.qty == 1

    again = await broker.submit(order)     # e.g. the executor restarted and retries from its journal
    assert again.broker_order_id == placed.broker_order_id
    assert fake_alpaca.orders_created == 1


async def test_submit_retried_after_timeout_returns_the_existing_order(fake_alpaca: FakeAlpaca,
                                                                       clock: VirtualClock) -> None:
    broker = make_broker(fake_alpaca, clock, retry=alpaca.RetryPolicy(read_timeout_s=0.5))
    order = market("sig-2", side=domain.Side.SELL, qty=3)
    fake_alpaca.fail_next("POST", "/v2/orders", delay_s=3.0, after_create=True)   # answers too late

    placed = await broker.submit(order)

    assert len(fake_alpaca.calls("POST", "/v2/orders")) == 2
    assert fake_alpaca.orders_created == 1
    assert placed.broker_order_id == fake_alpaca.by_client[order.client_order_id]
    assert placed.side is domain.Side.SELL and placed.qty == 3


async def test_submit_retried_after_a_failure_before_creation_places_one_order(fake_alpaca: FakeAlpaca,
                                                                               clock: VirtualClock) -> None:
    broker = make_broker(fake_alpaca, clock)
    order = market("sig-3")
    fake_alpaca.fail_next("POST", "/v2/orders", status=503)     # refused before anything happened

    placed = await broker.submit(order)

    assert len(fake_alpaca.calls("POST", "/v2/orders")) == 2
    assert fake_alpaca.orders_created == 1
    assert not fake_alpaca.calls("GET", "/v2/orders:by_client_order_id")   # nothing to look up
    assert placed.broker_order_id == fake_alpaca.by_client[order.client_order_id]


async def test_a_definite_rejection_is_not_retried(fake_alpaca: FakeAlpaca, clock: VirtualClock) -> None:
    broker = make_broker(fake_alpaca, clock)
    fake_alpaca.fail_next("POST", "/v2/orders", status=403, body="error_insufficient_buying_power")
    with pytest.raises(OrderRejected, match="insufficient buying power"):
        await broker.submit(market("sig-4"))
    assert len(fake_alpaca.calls("POST", "/v2/orders")) == 1
    assert fake_alpaca.orders_created == 0


async def test_limit_orders_carry_their_price(fake_alpaca: FakeAlpaca, clock: VirtualClock) -> None:
    broker = make_broker(fake_alpaca, clock)
    order = domain.Order(client_order_id=domain.client_order_id("u", "limit"), symbol="MSFT", side=domain.Side.BUY,
                         qty=2, order_type=domain.OrderType.LIMIT, limit_price=401.5)
    placed = await broker.submit(order)
    (post,) = fake_alpaca.calls("POST", "/v2/orders")
    assert post.body["type"] == "limit" and float(post.body["limit_price"]) == 401.5
    assert placed.order_type is domain.OrderType.LIMIT and placed.limit_price == 401.5
    with pytest.raises(OrderRejected):   # a limit order without a price never leaves the process
        await broker.submit(domain.Order(client_order_id="tp-x", symbol="MSFT", side=domain.Side.BUY, qty=1,
                                         order_type=domain.OrderType.LIMIT))
    assert len(fake_alpaca.calls("POST", "/v2/orders")) == 1


# ---------------------------------------------------------------- request budget

def max_in_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_requests_over_budget_are_spaced_out(fake_alpaca: FakeAlpaca, clock: VirtualClock) -> None:
    budget = alpaca.RequestBudget(per_minute=200, burst=20, clock=clock, sleep=clock.sleep)
    broker = make_broker(fake_alpaca, clock, budget=budget)
    start = clock()
    for _ in range(260):
        await broker.connect()
    times = [r.at for r in fake_alpaca.calls("GET", "/v2/account")]
    assert len(times) == 260
    assert all(t == start for t in times[:20])                       # the burst goes out at once
    gaps = [b - a for a, b in itertools.pairwise(times[19:])]
    assert gaps == pytest.approx([1 / 3] * 240)                      # then (200 - 20) / 60 per second
    assert max_in_window(times, 60.0) <= 200                         # Alpaca's limit holds in every window
    assert times[-1] - start == pytest.approx(240 / 3)


async def test_the_budget_is_shared_by_every_caller_on_the_account(fake_alpaca: FakeAlpaca,
                                                                   clock: VirtualClock) -> None:
    budget = alpaca.RequestBudget(per_minute=60, burst=5, clock=clock, sleep=clock.sleep)
    first = make_broker(fake_alpaca, clock, budget=budget)
    second = make_broker(fake_alpaca, clock, budget=budget)
    for _ in range(10):
        await first.connect()
        await second.get_order("tp-unknown")
    times = sorted(r.at for r in fake_alpaca.requests)
    assert len(times) == 20
    assert max_in_window(times, 60.0) <= 60
    assert times[-1] - times[0] == pytest.approx(15 / (55 / 60))     # 15 requests beyond the burst of 5

    assert alpaca.account_budget(KEY_ID) is alpaca.account_budget(KEY_ID)
    assert alpaca.AlpacaBroker(KEY_ID, SECRET).budget is alpaca.AlpacaBroker(KEY_ID, "other").budget


async def test_rate_limited_requests_back_off_and_drain_the_budget(fake_alpaca: FakeAlpaca,
                                                                   clock: VirtualClock) -> None:
    budget = alpaca.RequestBudget(per_minute=200, burst=20, clock=clock, sleep=clock.sleep)
    broker = make_broker(fake_alpaca, clock, budget=budget)
    fake_alpaca.fail_next("GET", "/v2/account", status=429, body="error_rate_limited")
    await broker.connect()
    first, second = (r.at for r in fake_alpaca.calls("GET", "/v2/account"))
    assert second - first >= 1 / 3           # the bucket was emptied: the retry waited for a fresh token
    assert broker.connected


# ---------------------------------------------------------------- retries and reconnects

async def test_transient_failures_retry_with_bounded_jittered_backoff(fake_alpaca: FakeAlpaca,
                                                                      clock: VirtualClock) -> None:
    retry = alpaca.RetryPolicy(attempts=6, backoff_s=0.5, max_backoff_s=2.0)
    broker = make_broker(fake_alpaca, clock, retry=retry)
    for _ in range(5):
        fake_alpaca.fail_next("GET", "/v2/account", status=502)
    await broker.connect()                               # the sixth attempt succeeds: reconnected
    assert len(fake_alpaca.calls("GET", "/v2/account")) == 6
    backoffs = [s for s in clock.sleeps if s > 0]
    assert len(backoffs) == 5
    assert all(0 <= s <= 2.0 for s in backoffs)           # bounded by max_backoff_s

    for _ in range(6):
        fake_alpaca.fail_next("GET", "/v2/account", status=500)
    with pytest.raises(BrokerError, match="after retries"):
        await broker.connect()
    assert not broker.connected
    assert len(fake_alpaca.calls("GET", "/v2/account")) == 12   # attempts are bounded


async def test_unreachable_server_is_a_broker_error(clock: VirtualClock) -> None:
    with socket.socket() as sock:        # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broker = alpaca.AlpacaBroker(KEY_ID, SECRET, url_override=f"http://127.0.0.1:{port}",
                                 budget=alpaca.RequestBudget(clock=clock, sleep=clock.sleep), sleep=clock.sleep,
                                 retry=alpaca.RetryPolicy(attempts=3))
    with pytest.raises(BrokerError, match="ConnectionError"):
        await broker.connect()
    assert not broker.connected
    assert len([s for s in clock.sleeps if s > 0]) <= 2


# ---------------------------------------------------------------- mapping to domain types

async def test_account_and_positions_map_to_domain_types(fake_alpaca: FakeAlpaca, clock: VirtualClock) -> None:
    account = await make_broker(fake_alpaca, clock).account()
    assert account.cash == 93760.19 and account.equity == 100213.45 and account.buying_power == 187520.38
    assert account.positions["AAPL"].qty == 30 and account.positions["AAPL"].avg_price == 189.12
    assert account.positions["TSLA"].qty == -3                  # short positions are negative


async def test_orders_open_orders_cancel_and_lookup(fake_alpaca: FakeAlpaca, clock: VirtualClock) -> None:
    broker = make_broker(fake_alpaca, clock)
    keep, filled, cancel = market("open"), market("filled", symbol="MSFT"), market("cancel", symbol="TSLA")
    for order in (keep, filled, cancel):
        await broker.submit(order)
    fake_alpaca.fill(filled.client_order_id, price=402.1)

    await broker.cancel(cancel.client_order_id)
    await broker.cancel(filled.client_order_id)           # not cancelable any more: left as it is
    await broker.cancel("tp-never-placed")                # unknown: nothing to do
    assert len(fake_alpaca.calls("DELETE", f"/v2/orders/{fake_alpaca.by_client[filled.client_order_id]}")) == 1

    open_now = await broker.open_orders()
    assert [o.client_order_id for o in open_now] == [keep.client_order_id]

    got = await broker.get_order(filled.client_order_id)
    assert got is not None and got.status is domain.OrderStatus.FILLED
    assert got.filled_qty == 1 and got.avg_fill_price == 402.1
    canceled = await broker.get_order(cancel.client_order_id)
    assert canceled is not None and canceled.status is domain.OrderStatus.CANCELED
    assert await broker.get_order("tp-never-placed") is None


async def test_fills_are_polled_in_order_with_a_cursor(fake_alpaca: FakeAlpaca, clock: VirtualClock) -> None:
    broker = make_broker(fake_alpaca, clock)
    order = market("fills", qty=5)
    await broker.submit(order)
    fake_alpaca.fill(order.client_order_id, price=190.0, qty=2)
    fake_alpaca.fill(order.client_order_id, price=190.5, qty=3)

    fills, cursor = await broker.fills_since(0)
    assert [(f.client_order_id, f.qty, f.price) for f in fills] == [
        (order.client_order_id, 2, 190.0), (order.client_order_id, 3, 190.5)]
    assert cursor == 2 and len({f.fill_id for f in fills}) == 2

    foreign = fake_alpaca.add_foreign_order("placed-by-hand")
    fake_alpaca.fill("placed-by-hand", price=30.0)
    more, cursor = await broker.fills_since(cursor)
    assert [(f.client_order_id, f.symbol, f.side) for f in more] == [("placed-by-hand", "MSFT", domain.Side.SELL)]
    assert fake_alpaca.calls("GET", f"/v2/orders/{foreign['id']}")   # whose fill it is, asked once
    assert cursor == 3
    assert await broker.fills_since(cursor) == ([], 3)
    second_poll = fake_alpaca.calls("GET", "/v2/account/activities/FILL")[-1]
    assert second_poll.query["page_token"] == fake_alpaca.activities[-1]["id"]


async def test_extended_hours_orders_are_day_limit_orders_with_the_flag(fake_alpaca: FakeAlpaca,
                                                                         clock: VirtualClock) -> None:
    """Built by alpaca-py's real request models and sent through its real client (the fake records the body)."""
    broker = make_broker(fake_alpaca, clock)
    extended = domain.Order(client_order_id=domain.client_order_id("u", "ext"), symbol="MSFT", side=domain.Side.BUY,
                            qty=2, order_type=domain.OrderType.LIMIT, limit_price=401.5, extended_hours=True)
    await broker.submit(extended)
    regular = domain.Order(client_order_id=domain.client_order_id("u", "reg"), symbol="MSFT", side=domain.Side.BUY,
                           qty=2, order_type=domain.OrderType.LIMIT, limit_price=401.5)
    await broker.submit(regular)
    first, second = fake_alpaca.calls("POST", "/v2/orders")
    assert first.body["extended_hours"] is True and first.body["time_in_force"] == "day"
    assert first.body["type"] == "limit" and float(first.body["limit_price"]) == 401.5
    assert "extended_hours" not in second.body and second.body["time_in_force"] == "day"
    with pytest.raises(OrderRejected):   # Alpaca takes no extended-hours market order: it never leaves the process
        await broker.submit(domain.Order(client_order_id=domain.client_order_id("u", "mkt"), symbol="MSFT",
                                         side=domain.Side.BUY, qty=1, extended_hours=True))
    assert len(fake_alpaca.calls("POST", "/v2/orders")) == 2


# ---------------------------------------------------------------- end-of-day reconciliation

async def test_end_of_day_reconciliation_reads_positions_and_the_days_fills_through_alpaca_py(
        fake_alpaca: FakeAlpaca, clock: VirtualClock, postgres_server: Any) -> None:
    """TradingClient.get_all_positions and the FILL activities (recorded shapes) against a real journal."""
    import datetime as dt
    import uuid
    import zoneinfo

    from trading_operator.api.session import TradingSession
    from trading_operator.api.status import ReconciliationTrigger
    from trading_operator.api.workerconfig import WorkerConfig
    from trading_workers.executor.eod import EndOfDay
    from trading_workers.executor.fills import Book, Fills
    from trading_workers.journal import Journal

    noon = dt.datetime.now(zoneinfo.ZoneInfo("America/New_York")).replace(hour=12, minute=0, second=0, microsecond=0)
    fake_alpaca.epoch = noon.astimezone(dt.UTC)   # the day's orders and fills from noon, New York time
    broker = make_broker(fake_alpaca, clock)
    journal = await Journal.open(postgres_server.dsn, f"test/alpaca-eod-{uuid.uuid4().hex[:8]}")
    session = TradingSession.model_validate({"metadata": {"name": "eod", "namespace": "test", "uid": "u-eod"},
                                             "spec": {"broker": {"kind": "alpaca"}, "symbols": ["AAPL", "MSFT"],
                                                      "riskPolicyRef": {"name": "p"}}})
    book = Book()
    fills = Fills(broker, book, lambda: journal)
    eod = EndOfDay(config=WorkerConfig.from_session(session), broker=broker, book=book, fills=fills,
                   journal=lambda: journal, session_now=lambda: noon + dt.timedelta(hours=4), events=None,
                   on_done=lambda: None)
    try:
        for order in (market("eod-aapl", qty=10), market("eod-msft", symbol="MSFT", qty=5)):
            await journal.record_new_order(order, order.client_order_id)
            placed = await broker.submit(order)
            await journal.update_order(order.client_order_id, placed.status, broker_order_id=placed.broker_order_id)
            fake_alpaca.fill(order.client_order_id, price=190.0 if order.symbol == "AAPL" else 402.0)
        fake_alpaca.set_positions({"AAPL": (10, 190.0), "MSFT": (5, 402.0)})

        clean = await eod.run(ReconciliationTrigger.CLOSE, None)
        assert clean.clean and (clean.positions, clean.fills) == (2, 2), clean
        assert fake_alpaca.calls("GET", "/v2/positions")
        asked = [c.query for c in fake_alpaca.calls("GET", "/v2/account/activities/FILL") if "page_token" not in c.query]
        day_start = dt.datetime.fromisoformat(asked[-1]["after"])
        assert day_start == noon.replace(hour=0).astimezone(dt.UTC)   # the session day began at midnight, New York

        # Someone trades the shared account by hand (an open TSLA order, a short), and the journal loses a fill.
        foreign = fake_alpaca.add_foreign_order("placed-by-hand", symbol="TSLA")
        fake_alpaca.set_positions({"AAPL": (10, 190.0), "MSFT": (5, 402.0), "TSLA": (-3, 238.9)})
        lost = fake_alpaca.activities[1]["id"]
        async with journal.pool.acquire() as conn:
            await conn.execute("DELETE FROM fills WHERE session = $1 AND fill_id = $2", journal.session, lost)

        rec = await eod.run(ReconciliationTrigger.REQUEST, "req-1")
        named = {(d.kind, d.symbol, d.broker_qty, d.journal_qty, d.order_id, d.fill_id, d.action)
                 for d in rec.differences}
        msft = market("eod-msft", symbol="MSFT").client_order_id
        assert named == {
            ("PositionMismatch", "TSLA", -3.0, 0.0, None, None, "Flagged"),
            ("FillMissingInJournal", "MSFT", 5.0, None, msft, lost, "Flagged"),
            ("UnknownBrokerOrder", "TSLA", -2.0, None, "placed-by-hand", None, "Flagged"),   # a shared account
        }, rec.differences
        assert not rec.clean and (rec.adopted, rec.flagged, rec.request) == (0, 3, "req-1")
        assert next(d for d in rec.differences if d.kind == "UnknownBrokerOrder").broker_order_id == foreign["id"]
        assert await journal.get_order("placed-by-hand") is None   # flagged, never adopted on a shared account
        rows = await journal.reconciliations()
        assert [(r["trigger"], r["clean"], r["flagged"], r["broker"]) for r in rows] == [
            ("Close", True, 0, "alpaca"), ("Request", False, 3, "alpaca")]
        assert {d["kind"] for d in rows[1]["differences"]} == {"PositionMismatch", "FillMissingInJournal",
                                                               "UnknownBrokerOrder"}
    finally:
        async with journal.pool.acquire() as conn:
            for table in ("orders", "fills", "positions", "broker_cursors", "reconciliations"):
                await conn.execute(f"DELETE FROM {table} WHERE session = $1", journal.session)
        await journal.close()
