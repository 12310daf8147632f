"""Alpaca adapter: the Broker protocol over alpaca-py's TradingClient (paper by default).

Why each piece is here:

- **Paper by default.** ``paper=True`` unless the caller says otherwise; the
  operator only allows live trading with the RiskPolicy's ``allowLive`` and a
  labelled namespace, and this adapter never decides that on its own.
- **Credentials from the environment** (``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``,
  injected from the session's Secret). They are handed to alpaca-py and never
  logged, formatted into errors, or kept in this object's repr. ``TRADING_ALPACA_TRADING_URL``
  overrides the endpoint (the drills' recorded responses on loopback).
- **Idempotent submit.** Every order carries its deterministic ``client_order_id``.
  A submit whose outcome is unknown (timeout, 5xx) is retried with the *same* id;
  if the first attempt did reach Alpaca, the retry is refused as a duplicate
  (HTTP 422, code 40010001) and the adapter returns the existing order, fetched by
  client id. One signal, one order — whatever the network did.
- **Bounded, jittered retries** (tenacity) for what may heal: timeouts, connection
  errors, 5xx, 429. Anything else is a definite answer and is not retried.
  alpaca-py's own 429 retry (a fixed 3 s sleep, invisible to the budget) is turned
  off so there is one retry policy, and it is this one.
- **An account-wide request budget.** Alpaca allows 200 requests/min per account.
  Every HTTP attempt — retries included — takes a token from one bucket per account
  per process (only the executor, a single replica, talks to Alpaca). The bucket
  holds ``burst`` tokens and refills at ``(per_minute - burst) / 60`` per second, so
  no sliding 60 s window can exceed ``per_minute``; a 429 empties it.
- **Timeouts.** alpaca-py sends without a timeout; a transport adapter mounted on
  its session supplies one, so a hung connection becomes a retry, not a stuck executor.
- TradingClient is synchronous; each call runs in a thread (``asyncio.to_thread``).

Fills come from the account-activities endpoint (``/v2/account/activities/FILL``),
requested through the client's own request path; the adapter keeps the fills it
has seen in order, and ``fills_since(cursor)`` is an index into that list.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
import requests
import tenacity
from alpaca.common.enums import BaseURL
from alpaca.common.exceptions import APIError
from alpaca.trading import enums as alpaca_enums
from alpaca.trading import models as alpaca_models
from alpaca.trading.client import TradingClient
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest, OrderRequest
from requests.adapters import BaseAdapter, HTTPAdapter

from trading_operator.api import session, workerconfig
from trading_workers import domain
from trading_workers.brokers.base import BrokerCapabilities, BrokerError, OrderRejected
from trading_workers.errors import ConfigError

__all__ = ["LIVE_URL", "PAPER_URL", "AlpacaBroker", "RequestBudget", "RetryPolicy", "account_budget"]

log = logging.getLogger(__name__)

PAPER_URL: str = BaseURL.TRADING_PAPER.value
LIVE_URL: str = BaseURL.TRADING_LIVE.value
REQUESTS_PER_MINUTE = 200            # Alpaca's documented per-account limit
DEFAULT_BURST = 20
ERR_DUPLICATE_CLIENT_ORDER_ID = 40010001
OPEN_ORDERS_PAGE = 500               # Alpaca's maximum ``limit`` for GET /v2/orders
ACTIVITIES_PAGE = 100
FILLS_LOOKBACK = dt.timedelta(hours=24)
#: Points alpaca-py's TradingClient elsewhere (as TRADING_ALPACA_STREAM_URL / _DATA_URL do for market data):
#: the drills serve recorded responses on loopback through it. The operator never sets it.
ENV_TRADING_URL = "TRADING_ALPACA_TRADING_URL"

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


# ------------------------------------------------------------------ request budget

class RequestBudget:
    """A token bucket shared by every request to one account.

    ``acquire`` reserves the next slot and sleeps until it (first come, first
    served); the state is guarded by a thread lock and never held across an
    await, so one budget may be shared by event loops and threads alike.
    ``clock`` and ``sleep`` are injectable so tests can drive it in virtual time.
    """

    def __init__(self, per_minute: int = REQUESTS_PER_MINUTE, burst: int = DEFAULT_BURST, *,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if not 0 < burst < per_minute:
            raise ValueError("need 0 < burst < per_minute")
        self.per_minute = per_minute
        self.capacity = float(burst)
        self.rate = (per_minute - burst) / 60.0     # tokens per second
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._mutex = threading.Lock()
        self.acquired = 0
        self.waited_s = 0.0

    def reserve(self) -> float:
        """Take a token (possibly one not yet refilled); return how long to wait before using it."""
        with self._mutex:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            self.acquired += 1
            delay = max(0.0, -self._tokens / self.rate)
            self.waited_s += delay
            return delay

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)

    def exhausted(self) -> None:
        """Alpaca said 429: someone else spends this account's budget too; start from empty."""
        with self._mutex:
            self._tokens = min(self._tokens, 0.0)


_budgets: dict[str, RequestBudget] = {}
_budgets_lock = threading.Lock()


def account_budget(key_id: str, per_minute: int = REQUESTS_PER_MINUTE, burst: int = DEFAULT_BURST) -> RequestBudget:
    """The process-wide budget of the account behind ``key_id`` (keyed by a digest, not the key)."""
    account = hashlib.sha256(key_id.encode()).hexdigest()[:16]
    with _budgets_lock:
        budget = _budgets.get(account)
        if budget is None:
            budget = _budgets[account] = RequestBudget(per_minute, burst)
        return budget


# ------------------------------------------------------------------ retries, timeouts

@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff for transient failures, and the HTTP timeouts."""

    attempts: int = 5
    max_total_s: float = 30.0
    backoff_s: float = 0.25          # multiplier of the random exponential wait
    max_backoff_s: float = 8.0
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 10.0


class _Transient(Exception):
    """Internal: worth retrying. Carries a message that is safe to log (status, exception type)."""


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a (connect, read) timeout; alpaca-py passes none."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


def _status(exc: APIError) -> int | None:
    try:
        return exc.status_code
    except Exception:
        return None


def _error_body(exc: APIError) -> tuple[int | None, str]:
    """(Alpaca error code, message) from an APIError, tolerating non-JSON bodies."""
    text = str(exc)
    try:
        body = json.loads(text)
    except ValueError:
        return None, text[:200]
    if not isinstance(body, dict):
        return None, text[:200]
    code = body.get("code")
    return (code if isinstance(code, int) else None), str(body.get("message", ""))[:200]


def _is_duplicate(exc: APIError) -> bool:
    code, message = _error_body(exc)
    return _status(exc) == 422 and (code == ERR_DUPLICATE_CLIENT_ORDER_ID
                                    or "client_order_id must be unique" in message)


# ------------------------------------------------------------------ mapping to domain types

_OPEN = {"new", "accepted", "pending_new", "accepted_for_bidding", "held", "pending_cancel",
         "pending_replace", "pending_review", "calculated", "stopped", "suspended"}
_DONE = {"canceled", "expired", "done_for_day", "replaced"}


def _status_to_domain(status: alpaca_enums.OrderStatus) -> domain.OrderStatus:
    value = status.value
    if value == "filled":
        return domain.OrderStatus.FILLED
    if value == "partially_filled":
        return domain.OrderStatus.PARTIALLY_FILLED
    if value == "rejected":
        return domain.OrderStatus.REJECTED
    if value in _DONE:
        return domain.OrderStatus.CANCELED
    # Alpaca's "new" means acknowledged by Alpaca; the domain's NEW means not yet sent.
    return domain.OrderStatus.ACCEPTED


def _num(value: str | float | None) -> float:
    return float(value) if value not in (None, "") else 0.0


def to_domain_order(order: alpaca_models.Order) -> domain.Order:
    """Map an alpaca-py Order. Order types other than market/limit (e.g. stop orders placed
    by hand in the same account) map to LIMIT when they carry a limit price, else MARKET."""
    kind = order.type or order.order_type
    limit = _num(order.limit_price) if order.limit_price not in (None, "") else None
    order_type = (domain.OrderType.LIMIT if (kind is not None and kind.value == "limit") or limit is not None
                  else domain.OrderType.MARKET)
    side = domain.Side.SELL if order.side is not None and order.side.value == "sell" else domain.Side.BUY
    return domain.Order(
        client_order_id=order.client_order_id, symbol=order.symbol or "", side=side, qty=_num(order.qty),
        order_type=order_type, limit_price=limit, status=_status_to_domain(order.status),
        filled_qty=_num(order.filled_qty), avg_fill_price=_num(order.filled_avg_price),
        broker_order_id=str(order.id),
        reject_reason=order.status.value if order.status.value == "rejected" else None)


def to_domain_position(position: alpaca_models.Position) -> domain.Position:
    qty = abs(_num(position.qty))
    if position.side.value == "short":
        qty = -qty
    return domain.Position(symbol=position.symbol, qty=qty, avg_price=_num(position.avg_entry_price))


class FillActivity(pydantic.BaseModel):
    """One FILL/partial_fill entry of GET /v2/account/activities/FILL (the Trading API's shape,
    which unlike the Broker API's carries no account_id, so alpaca-py's TradeActivity does not fit)."""

    model_config = pydantic.ConfigDict(extra="ignore")

    id: str
    activity_type: str
    transaction_time: dt.datetime
    type: str
    price: float
    qty: float
    side: str
    symbol: str
    order_id: str
    leaves_qty: float = 0.0
    cum_qty: float = 0.0
    order_status: str | None = None


# ------------------------------------------------------------------ the adapter

class AlpacaBroker:
    """The Broker protocol for Alpaca (see the module docstring for the guarantees)."""

    name = "alpaca"
    # An account other sessions may share; the fill cursor lives in this process; a ping costs a request.
    capabilities = BrokerCapabilities()

    def __init__(self, key_id: str, secret_key: str, *, paper: bool = True, url_override: str | None = None,
                 budget: RequestBudget | None = None, retry: RetryPolicy | None = None,
                 sleep: Sleep = asyncio.sleep, transport: BaseAdapter | None = None,
                 fills_after: dt.datetime | None = None) -> None:
        if not key_id or not secret_key:
            raise ConfigError("alpaca needs an API key id and secret key")
        self.paper = paper
        self.retry = retry or RetryPolicy()
        self.budget = budget or account_budget(key_id)
        self.connected = False
        self._sleep = sleep
        self._client = TradingClient(api_key=key_id, secret_key=secret_key, paper=paper, url_override=url_override)
        # One retry policy (ours, budgeted): alpaca-py would otherwise sleep 3 s and resend 429/504 itself.
        self._client._retry = 0
        adapter = transport or _TimeoutAdapter((self.retry.connect_timeout_s, self.retry.read_timeout_s))
        self._client._session.mount("https://", adapter)
        self._client._session.mount("http://", adapter)
        self._broker_ids: dict[str, str] = {}       # client_order_id -> Alpaca order id
        self._client_ids: dict[str, str] = {}       # Alpaca order id -> client_order_id
        self._fills: list[domain.Fill] = []
        self._fill_ids: set[str] = set()
        self._fills_after = fills_after or (dt.datetime.now(dt.UTC) - FILLS_LOOKBACK)
        self._last_activity_id: str | None = None

    @classmethod
    def from_env(cls, *, paper: bool = True, env: Mapping[str, str] | None = None, **kwargs: Any) -> AlpacaBroker:
        """Credentials from ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` (the pod gets them from the Secret)."""
        env = os.environ if env is None else env
        missing = [name for name in (workerconfig.ENV_BROKER_KEY_ID, workerconfig.ENV_BROKER_SECRET)
                   if not env.get(name)]
        if missing:
            raise ConfigError(f"alpaca credentials missing from the environment: {', '.join(missing)}")
        if env.get(ENV_TRADING_URL) and "url_override" not in kwargs:
            kwargs["url_override"] = env[ENV_TRADING_URL]
        return cls(env[workerconfig.ENV_BROKER_KEY_ID], env[workerconfig.ENV_BROKER_SECRET], paper=paper, **kwargs)

    @classmethod
    def from_spec(cls, spec: session.BrokerSpec, *, env: Mapping[str, str] | None = None,
                  **kwargs: Any) -> AlpacaBroker:
        """The adapter a session's ``spec.broker`` asks for (its ``paper`` flag; keys from the environment)."""
        if spec.kind != "alpaca":
            raise ConfigError(f"broker kind {spec.kind!r} is not alpaca")
        return cls.from_env(paper=spec.paper, env=env, **kwargs)

    @property
    def base_url(self) -> str:
        base = self._client._base_url
        return base.value if isinstance(base, BaseURL) else str(base)

    @property
    def client(self) -> TradingClient:
        return self._client

    def __repr__(self) -> str:
        return f"AlpacaBroker(paper={self.paper}, base_url={self.base_url!r})"

    # -- protocol

    async def connect(self) -> None:
        account = await self._call("get_account", self._client.get_account)
        if not isinstance(account, alpaca_models.TradeAccount):
            raise BrokerError("alpaca get_account: unexpected response")
        if account.status.value != "ACTIVE" or account.trading_blocked or account.account_blocked:
            self.connected = False
            raise BrokerError(f"alpaca account cannot trade (status {account.status.value}, "
                              f"trading_blocked={account.trading_blocked}, account_blocked={account.account_blocked})")

    async def close(self) -> None:
        self.connected = False
        await asyncio.to_thread(self._client._session.close)

    async def submit(self, order: domain.Order) -> domain.Order:
        """Place ``order``; a duplicate ``client_order_id`` returns the order Alpaca already has."""
        request = self._order_request(order)
        try:
            placed = await self._call("submit_order", self._client.submit_order, request)
        except APIError as exc:
            if _is_duplicate(exc):
                log.info("alpaca already has this client_order_id; returning the existing order",
                         extra={"client_order_id": order.client_order_id})
                existing = await self.get_order(order.client_order_id)
                if existing is None:
                    raise BrokerError(f"alpaca reports {order.client_order_id} as a duplicate "
                                      "but cannot find it") from None
                return existing
            code, message = _error_body(exc)
            raise OrderRejected(f"alpaca rejected {order.client_order_id}: HTTP {_status(exc)} "
                                f"{code or ''} {message}".rstrip()) from None
        if not isinstance(placed, alpaca_models.Order):
            raise BrokerError("alpaca submit_order: unexpected response")
        return self._remember(to_domain_order(placed))

    async def cancel(self, client_order_id: str) -> None:
        """Cancel if open. Unknown, already-final or not-cancelable orders are left as they are."""
        broker_id = self._broker_ids.get(client_order_id)
        if broker_id is None:
            existing = await self.get_order(client_order_id)
            if existing is None or not existing.status.is_open or existing.broker_order_id is None:
                return
            broker_id = existing.broker_order_id
        try:
            await self._call("cancel_order", self._client.cancel_order_by_id, broker_id)
        except APIError as exc:
            if _status(exc) in (404, 422):   # gone, or no longer cancelable (filled, already canceled)
                return
            raise self._unexpected("cancel_order", exc) from None

    async def get_order(self, client_order_id: str) -> domain.Order | None:
        try:
            found = await self._call("get_order", self._client.get_order_by_client_id, client_order_id)
        except APIError as exc:
            if _status(exc) == 404:
                return None
            raise self._unexpected("get_order", exc) from None
        if not isinstance(found, alpaca_models.Order):
            raise BrokerError("alpaca get_order: unexpected response")
        return self._remember(to_domain_order(found))

    async def open_orders(self) -> list[domain.Order]:
        """Every open order of the account (paged by submission time, newest first)."""
        orders: dict[str, domain.Order] = {}
        until: dt.datetime | None = None
        while True:
            request = GetOrdersRequest(status=alpaca_enums.QueryOrderStatus.OPEN, limit=OPEN_ORDERS_PAGE,
                                       nested=False, until=until)
            try:
                page = await self._call("get_orders", self._client.get_orders, request)
            except APIError as exc:
                raise self._unexpected("get_orders", exc) from None
            if not isinstance(page, list):
                raise BrokerError("alpaca get_orders: unexpected response")
            fresh = [o for o in page if str(o.id) not in orders]
            for o in fresh:
                orders[str(o.id)] = self._remember(to_domain_order(o))
            if len(page) < OPEN_ORDERS_PAGE or not fresh:
                return list(orders.values())
            until = min(o.submitted_at for o in page)

    async def account(self) -> domain.Account:
        try:
            acct = await self._call("get_account", self._client.get_account)
            positions = await self._call("get_all_positions", self._client.get_all_positions)
        except APIError as exc:
            raise self._unexpected("account", exc) from None
        if not isinstance(acct, alpaca_models.TradeAccount) or not isinstance(positions, list):
            raise BrokerError("alpaca account: unexpected response")
        return domain.Account(
            cash=_num(acct.cash), equity=_num(acct.equity), buying_power=_num(acct.buying_power),
            positions={p.symbol: to_domain_position(p) for p in positions})

    async def ping(self) -> bool:
        """Reachable and answering: one account read (``capabilities.cheap_ping`` is False, so every 15 s)."""
        await self.account()
        return True

    async def on_quote(self, symbol: str, price: float) -> list[domain.Fill]:
        """Alpaca matches orders itself (``capabilities.quote_driven`` is False): nothing to do."""
        return []

    async def fills_since(self, cursor: int) -> tuple[list[domain.Fill], int]:
        """Poll new FILL activities, then return the fills after ``cursor`` and the new cursor."""
        await self._poll_fills()
        cursor = max(0, cursor)
        return self._fills[cursor:], len(self._fills)

    async def held_positions(self) -> dict[str, domain.Position]:
        """``TradingClient.get_all_positions`` (GET /v2/positions): the whole account's positions."""
        try:
            positions = await self._call("get_all_positions", self._client.get_all_positions)
        except APIError as exc:
            raise self._unexpected("get_all_positions", exc) from None
        if not isinstance(positions, list):
            raise BrokerError("alpaca get_all_positions: unexpected response")
        mapped = (to_domain_position(p) for p in positions)
        return {p.symbol: p for p in mapped if p.qty != 0}

    async def fills_after(self, since: float) -> list[domain.Fill]:
        """The account's FILL activities after ``since`` (GET /v2/account/activities/FILL, paged by
        ``page_token``), read afresh: independent of the fill cursor ``fills_since`` keeps."""
        after = dt.datetime.fromtimestamp(since, tz=dt.UTC).isoformat()
        fills: list[domain.Fill] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"direction": "asc", "page_size": ACTIVITIES_PAGE, "after": after}
            if token is not None:
                params["page_token"] = token
            page = await self._activities(params)
            for activity in page:
                fills.append(await self._to_fill(activity))
            if len(page) < ACTIVITIES_PAGE:
                return fills
            token = page[-1].id

    # -- internals

    def _order_request(self, order: domain.Order) -> OrderRequest:
        side = alpaca_enums.OrderSide.BUY if order.side is domain.Side.BUY else alpaca_enums.OrderSide.SELL
        try:
            if order.order_type is domain.OrderType.LIMIT:
                return LimitOrderRequest(symbol=order.symbol, qty=order.qty, side=side,
                                         time_in_force=alpaca_enums.TimeInForce.DAY,
                                         limit_price=order.limit_price, client_order_id=order.client_order_id,
                                         extended_hours=order.extended_hours or None)
            if order.extended_hours:  # Alpaca takes only DAY limit orders outside regular hours
                raise OrderRejected(f"order {order.client_order_id}: outside regular hours only limit orders "
                                    "are accepted (RiskPolicy extendedHours.limitOrdersOnly refuses them earlier)")
            return MarketOrderRequest(symbol=order.symbol, qty=order.qty, side=side,
                                      time_in_force=alpaca_enums.TimeInForce.DAY,
                                      client_order_id=order.client_order_id)
        except (pydantic.ValidationError, ValueError) as exc:
            raise OrderRejected(f"order {order.client_order_id} is not valid for alpaca: {exc}") from None

    def _remember(self, order: domain.Order) -> domain.Order:
        if order.broker_order_id:
            self._broker_ids[order.client_order_id] = order.broker_order_id
            self._client_ids[order.broker_order_id] = order.client_order_id
        return order

    async def _poll_fills(self) -> None:
        while True:
            params: dict[str, Any] = {"direction": "asc", "page_size": ACTIVITIES_PAGE}
            if self._last_activity_id is not None:
                params["page_token"] = self._last_activity_id
            else:
                params["after"] = self._fills_after.isoformat()
            page = await self._activities(params)
            for activity in page:
                if activity.id not in self._fill_ids:
                    self._fills.append(await self._to_fill(activity))
                    self._fill_ids.add(activity.id)
            if page:
                self._last_activity_id = page[-1].id
            if len(page) < ACTIVITIES_PAGE:
                return

    async def _activities(self, params: dict[str, Any]) -> list[FillActivity]:
        """One page of FILL activities, through the client's own request path (alpaca-py 0.44 has no
        Trading API activities call; its TradeActivity model is the Broker API's, with an account_id)."""
        try:
            raw = await self._call("get_activities", self._client.get, "/account/activities/FILL", params)
        except APIError as exc:
            raise self._unexpected("get_activities", exc) from None
        if not isinstance(raw, list):
            raise BrokerError("alpaca get_activities: unexpected response")
        try:
            return [FillActivity.model_validate(item) for item in raw]
        except pydantic.ValidationError as exc:
            raise BrokerError(f"alpaca get_activities: unexpected activity shape: {exc}") from None

    async def _to_fill(self, activity: FillActivity) -> domain.Fill:
        client_id = self._client_ids.get(activity.order_id)
        if client_id is None:   # an order this process did not place or see: ask Alpaca whose it is
            try:
                order = await self._call("get_order_by_id", self._client.get_order_by_id, activity.order_id)
            except APIError as exc:
                raise self._unexpected("get_order_by_id", exc) from None
            if not isinstance(order, alpaca_models.Order):
                raise BrokerError("alpaca get_order_by_id: unexpected response")
            client_id = self._remember(to_domain_order(order)).client_order_id
        return domain.Fill(client_order_id=client_id, symbol=activity.symbol,
                           side=domain.Side.SELL if activity.side == "sell" else domain.Side.BUY,
                           qty=activity.qty, price=activity.price,
                           ts=activity.transaction_time.timestamp(), fill_id=activity.id)

    def _unexpected(self, what: str, exc: APIError) -> Exception:
        status = _status(exc)
        code, message = _error_body(exc)
        if status in (401, 403):
            return ConfigError(f"alpaca {what}: HTTP {status}: credentials refused or not permitted ({message})")
        return BrokerError(f"alpaca {what}: HTTP {status} {code or ''} {message}".rstrip())

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """One logical request: budgeted attempts with jittered, bounded backoff on transient failures.

        Definite answers (4xx other than 408/429) surface as ``APIError`` for the caller to interpret.
        """
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=tenacity.wait_random_exponential(multiplier=self.retry.backoff_s, max=self.retry.max_backoff_s),
            stop=tenacity.stop_after_attempt(self.retry.attempts) | tenacity.stop_after_delay(self.retry.max_total_s),
            sleep=self._sleep, reraise=True, before_sleep=self._log_retry(what))
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(fn, *args)
        except _Transient as exc:
            self.connected = False
            raise BrokerError(f"alpaca {what} failed after retries: {exc}") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _attempt(self, fn: Callable[..., T], *args: Any) -> T:
        await self.budget.acquire()
        try:
            result = await asyncio.to_thread(fn, *args)
        except APIError as exc:
            status = _status(exc)
            if status == 429:
                self.budget.exhausted()
                raise _Transient("HTTP 429 (rate limited)") from None
            if status is None or status >= 500 or status == 408:
                raise _Transient(f"HTTP {status}") from None
            self.connected = True   # the broker answered, even if it said no
            raise
        except requests.RequestException as exc:   # timeouts, refused or reset connections
            raise _Transient(type(exc).__name__) from None
        self.connected = True
        return result

    @staticmethod
    def _log_retry(what: str) -> Callable[[tenacity.RetryCallState], None]:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning("alpaca request failed, retrying",
                        extra={"call": what, "attempt": state.attempt_number, "error": str(error),
                               "retry_in_s": round(delay, 3)})
        return before_sleep
