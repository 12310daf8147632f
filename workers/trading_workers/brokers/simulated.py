"""The embedded simulated exchange: the default broker, no keys, no network.

Two parts:

``PriceProcess``
    A deterministic, seeded geometric Brownian motion per symbol. The same
    ``(seed, symbol, step)`` always gives the same price, on any machine and
    after any restart, so demos, drills and tests are reproducible. The
    market-data worker publishes it on the session clock; the exchange only
    uses it for a symbol's opening price before any quote has arrived.

``SimulatedExchange``
    Implements the ``Broker`` protocol: market and limit orders, partial
    fills (at most ``liquidity`` shares per order per price update), a
    latency knob, submit idempotent on ``client_order_id``, cancel, open
    orders, an account with positions, and a fill cursor. It matches orders
    against the quotes the executor feeds it (``on_quote``).

The exchange runs inside the executor process, but it plays the part of
the outside world: if the executor is SIGKILLed and restarted, or a reply
from Redis is lost, the exchange must still know every order it accepted
and never place one twice. So Redis (keys under the session's prefix) is
the exchange's state, and memory only a cache of it:

- every state change is one compare-and-set script: it applies only if the
  store's revision (``rev`` in the account hash) is the one the change was
  computed from, and bumps it. A write whose reply was lost, or that the
  Redis client re-sent after a broken connection, can therefore land at
  most once: the re-sent copy finds a newer revision and is refused;
- every request first compares the cached revision with the store's and
  reloads on a difference (and after any storage error), so a submit with
  a ``client_order_id`` the store knows returns the stored order, as a real
  exchange refusing a duplicate id would.

If Redis is down the exchange is down (``BrokerError``), exactly like a
remote broker would be. Every submit the exchange receives, including
idempotent repeats, is recorded, so tests check what reached the broker,
not what the executor believes it sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions

from trading_workers.brokers.base import BrokerCapabilities, BrokerError
from trading_workers.domain import Account, Fill, Order, OrderStatus, OrderType, Position, Side

TRADING_DAY_SECONDS = 23_400.0  # 6.5 h: volatility is quoted per trading day
DEFAULT_LIQUIDITY = 1_000.0     # shares per order per price update

T = TypeVar("T")


# --------------------------------------------------------------------------- price process

def _symbol_seed(seed: int, symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{symbol}".encode()).digest()[:8], "big")


#: Volatility indexes quoted by the simulated exchange at a calm level (12 to 20), not a stock price:
#: the market circuit breaker compares them with its vixLevel (50 by default).
VOLATILITY_INDEXES = frozenset({"VIX", "VXN", "VXD", "RVX", "VIX9D", "VIX3M"})


def initial_price(seed: int, symbol: str) -> float:
    """Opening price of ``symbol``: deterministic, between 20 and 500 USD (12 to 20 for a volatility index)."""
    if symbol in VOLATILITY_INDEXES:
        return round(12.0 + (_symbol_seed(seed, symbol) % 800) / 100.0, 2)
    return round(20.0 + (_symbol_seed(seed, symbol) % 48_000) / 100.0, 2)


class PriceProcess:
    """Deterministic GBM: ``price(symbol, step)`` depends only on seed, volatility, step size and step.

    ``autocorrelation`` (phi) makes each step's log return ``phi`` times the previous one plus a shock
    scaled to keep the same volatility (an AR(1) of returns: trending for phi > 0, reverting for
    phi < 0), so a model can have something to predict; 0, the default, is the plain random walk with
    the very same draws.
    """

    def __init__(self, seed: int, volatility: float, step_seconds: float, autocorrelation: float = 0.0) -> None:
        if not -1.0 < autocorrelation < 1.0:
            raise ValueError("autocorrelation must be within (-1, 1)")
        self.seed = seed
        self.sigma = volatility * math.sqrt(max(step_seconds, 0.0) / TRADING_DAY_SECONDS)
        self.phi = autocorrelation
        self._state: dict[str, tuple[random.Random, int, float, float]] = {}

    def price(self, symbol: str, step: int) -> float:
        """Price at ``step`` (0 is the opening price). Sequential access is O(1) per step."""
        if step < 0:
            raise ValueError("step must be >= 0")
        state = self._state.get(symbol)
        if state is None or state[1] > step:
            state = (random.Random(_symbol_seed(self.seed, symbol)), 0, initial_price(self.seed, symbol), 0.0)
        rng, current, price, previous = state
        sigma, drift, phi = self.sigma, -0.5 * self.sigma * self.sigma, self.phi
        scale = sigma * math.sqrt(1.0 - phi * phi)
        while current < step:
            shock = rng.gauss(0.0, 1.0)
            ret = sigma * shock if phi == 0.0 else phi * previous + scale * shock
            price = max(0.01, price * math.exp(drift + ret))
            previous = ret
            current += 1
        self._state[symbol] = (rng, current, price, previous)
        return round(price, 4)


# --------------------------------------------------------------------------- records

@dataclass(frozen=True, slots=True)
class SubmitRecord:
    """One submit as the exchange received it."""

    client_order_id: str
    at: float
    duplicate: bool  # the id was already known: the existing order was returned


def _order_json(order: Order) -> str:
    data = dataclasses.asdict(order)
    data["side"], data["order_type"], data["status"] = order.side.value, order.order_type.value, order.status.value
    return json.dumps(data, separators=(",", ":"))


def _order_from_json(raw: str | bytes) -> Order:
    data = json.loads(raw)
    data["side"], data["order_type"] = Side(data["side"]), OrderType(data["order_type"])
    data["status"] = OrderStatus(data["status"])
    return Order(**data)


def _fill_json(fill: Fill) -> str:
    data = dataclasses.asdict(fill)
    data["side"] = fill.side.value
    return json.dumps(data, separators=(",", ":"))


def _fill_from_json(raw: str | bytes) -> Fill:
    data = json.loads(raw)
    data["side"] = Side(data["side"])
    return Fill(**data)


@dataclass
class BrokerRecord:
    """The exchange's persisted world, as read from Redis by an outside observer (tests, drills)."""

    submits: list[SubmitRecord]
    orders: dict[str, Order]
    fills: list[Fill]
    cash: float | None
    positions: dict[str, Position]


async def read_record(client: aioredis.Redis, key_prefix: str) -> BrokerRecord:
    """What reached the exchange of the session whose keys start with ``key_prefix``."""
    return (await _read_world(client, key_prefix))[0]


def _text(raw: str | bytes) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def _read_world(client: aioredis.Redis, key_prefix: str) -> tuple[BrokerRecord, dict[str, str]]:
    """The whole persisted world and the account hash, read in one MULTI (a consistent snapshot)."""
    keys = _Keys(key_prefix)
    pipe = client.pipeline(transaction=True)
    pipe.lrange(keys.submits, 0, -1)
    pipe.hgetall(keys.orders)
    pipe.lrange(keys.fills, 0, -1)
    pipe.hgetall(keys.account)
    raw_submits, raw_orders, raw_fills, raw_account = await pipe.execute()
    submits = [SubmitRecord(**json.loads(raw)) for raw in raw_submits]
    orders = {_text(k): _order_from_json(v) for k, v in raw_orders.items()}
    fills = [_fill_from_json(raw) for raw in raw_fills]
    account = {_text(k): _text(v) for k, v in raw_account.items()}
    cash = float(account["cash"]) if "cash" in account else None
    positions = {s: Position(**p) for s, p in json.loads(account.get("positions", "{}")).items()}
    return BrokerRecord(submits=submits, orders=orders, fills=fills, cash=cash, positions=positions), account


#: Apply a change only on the revision it was computed from (KEYS: account, orders, fills, submits;
#: ARGV: expected revision, JSON {orders: {id: json}, fills: [json], submits: [json], account: {k: v}}).
#: Returns {1, new revision} when applied, {0, current revision} when the store moved on.
_CAS = """
local current = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if current ~= tonumber(ARGV[1]) then return {0, current} end
local change = cjson.decode(ARGV[2])
for id, order in pairs(change.orders) do redis.call('HSET', KEYS[2], id, order) end
for _, fill in ipairs(change.fills) do redis.call('RPUSH', KEYS[3], fill) end
for _, submit in ipairs(change.submits) do redis.call('RPUSH', KEYS[4], submit) end
for field, value in pairs(change.account) do redis.call('HSET', KEYS[1], field, value) end
redis.call('HSET', KEYS[1], 'rev', tostring(current + 1))
return {1, current + 1}
"""


class _StaleRevision(Exception):
    """The store moved on since the cache was loaded: reload and compute the change again."""


class _Keys:
    def __init__(self, prefix: str) -> None:
        base = f"{prefix}:sim"
        self.orders = f"{base}:orders"
        self.fills = f"{base}:fills"
        self.submits = f"{base}:submits"
        self.account = f"{base}:account"


@dataclass
class _Delta:
    """A state change computed on copies, persisted, then applied."""

    orders: dict[str, Order] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    submits: list[SubmitRecord] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    cash: float | None = None
    next_order_no: int | None = None


# --------------------------------------------------------------------------- exchange

class SimulatedExchange:
    """An in-process exchange persisted in Redis (see module docstring)."""

    name = "simulated"
    # Cursors index the fill list persisted in Redis (valid across restarts); one exchange per session;
    # ping is one Redis PING; orders match against the quotes the executor feeds it.
    capabilities = BrokerCapabilities(durable_cursor=True, session_scoped=True, cheap_ping=True, quote_driven=True)

    def __init__(self, *, seed: int = 42, volatility: float = 0.02, latency_ms: float = 0.0,
                 initial_cash: float = 1_000_000.0, liquidity: float = DEFAULT_LIQUIDITY,
                 redis_client: aioredis.Redis | None = None, key_prefix: str = "tp:sim",
                 clock: Callable[[], float] = time.time) -> None:
        self.seed = seed
        self.volatility = volatility
        self.latency = latency_ms / 1000.0
        self.initial_cash = initial_cash
        self.liquidity = liquidity
        self.redis = redis_client
        self.key_prefix = key_prefix
        self.keys = _Keys(key_prefix)
        self.clock = clock
        self.orders: dict[str, Order] = {}
        self.fills: list[Fill] = []
        self.submits: list[SubmitRecord] = []
        self.positions: dict[str, Position] = {}
        self.cash = initial_cash
        self.marks: dict[str, float] = {}
        self._next_order_no = 1
        self._rev = 0  # the store's revision the cache reflects
        self._stale = True  # reload before serving (set again by any storage error)
        self._cas: Any = None
        self._lock = asyncio.Lock()
        self._connected = False

    # ------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Load the persisted world (or create it). Raises ``BrokerError`` if Redis is unreachable."""
        async with self._lock:
            if self.redis is not None:
                self._cas = self.redis.register_script(_CAS)
                for field_name, value in (("cash", repr(self.initial_cash)), ("positions", "{}"),
                                          ("next_order_no", "1")):
                    await self._redis(self.redis.hsetnx(self.keys.account, field_name, value))  # type: ignore[misc]
                self._stale = True
                await self._sync()
            self._connected = True

    async def close(self) -> None:
        self._connected = False

    async def ping(self) -> bool:
        """Whether the exchange can serve requests now (its persistence is reachable)."""
        if not self._connected:
            return False
        if self.redis is None:
            return True
        try:
            await self.redis.ping()  # type: ignore[misc]
        except (redis.exceptions.RedisError, OSError):
            return False
        return True

    # ------------------------------------------------------------ protocol

    async def submit(self, order: Order) -> Order:
        await self._wire_delay()
        async with self._lock:
            self._require_connected()

            def place() -> tuple[_Delta, str]:
                now = self.clock()
                if order.client_order_id in self.orders:  # a known id: the first order, never a second one
                    return _Delta(submits=[SubmitRecord(order.client_order_id, now, True)]), order.client_order_id
                delta = _Delta(submits=[SubmitRecord(order.client_order_id, now, False)],
                               next_order_no=self._next_order_no + 1)
                placed = dataclasses.replace(order, broker_order_id=f"sim-{self._next_order_no}",
                                             filled_qty=0.0, avg_fill_price=0.0, reject_reason=None)
                reject = self._validate(placed)
                if reject:
                    placed.status, placed.reject_reason = OrderStatus.REJECTED, reject
                    delta.orders[placed.client_order_id] = placed
                else:
                    placed.status = OrderStatus.ACCEPTED
                    delta.orders[placed.client_order_id] = placed
                    self._match(placed, self._mark(placed.symbol), delta, now)
                return delta, order.client_order_id

            coid = await self._transact(place)
            return dataclasses.replace(self.orders[coid])

    async def cancel(self, client_order_id: str) -> None:
        """Cancel an open order; a no-op for unknown or closed orders (idempotent)."""
        await self._wire_delay()
        async with self._lock:
            self._require_connected()

            def cancel() -> tuple[_Delta, None]:
                order = self.orders.get(client_order_id)
                if order is None or not order.status.is_open:
                    return _Delta(), None
                return _Delta(orders={client_order_id: dataclasses.replace(order, status=OrderStatus.CANCELED)}), None

            await self._transact(cancel)

    async def get_order(self, client_order_id: str) -> Order | None:
        async with self._lock:
            self._require_connected()
            await self._sync()
            order = self.orders.get(client_order_id)
            return dataclasses.replace(order) if order else None

    async def open_orders(self) -> list[Order]:
        async with self._lock:
            self._require_connected()
            await self._sync()
            return [dataclasses.replace(o) for o in self.orders.values() if o.status.is_open]

    async def account(self) -> Account:
        async with self._lock:
            self._require_connected()
            await self._sync()
            equity, gross = self._equity_and_gross(self.cash, self.positions)
            positions = {s: dataclasses.replace(p) for s, p in self.positions.items() if p.qty != 0}
            return Account(cash=self.cash, equity=equity, buying_power=max(0.0, 2.0 * equity - gross),
                           positions=positions)

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        async with self._lock:
            self._require_connected()
            await self._sync()
            return list(self.fills[max(cursor, 0):]), len(self.fills)

    async def held_positions(self) -> dict[str, Position]:
        return (await self.account()).positions

    async def fills_after(self, since: float) -> list[Fill]:
        """The fills in the exchange's persisted record at or after ``since`` (its own state, read afresh)."""
        async with self._lock:
            self._require_connected()
            self._stale = True
            await self._sync()
            return [f for f in self.fills if f.ts >= since]

    # ------------------------------------------------------------ market

    async def on_quote(self, symbol: str, price: float) -> list[Fill]:
        """A new price for ``symbol``: marks it and matches the symbol's open orders against it."""
        if not (price > 0.0 and math.isfinite(price)):
            return []
        async with self._lock:
            self.marks[symbol] = price
            if not self._connected:
                return []
            if not self._stale and not any(o.symbol == symbol and o.status.is_open for o in self.orders.values()):
                return []  # nothing to match (a quote with nothing open costs no round trip)

            def match() -> tuple[_Delta, list[Fill]]:
                delta = _Delta()
                now = self.clock()
                for order in [o for o in self.orders.values() if o.symbol == symbol and o.status.is_open]:
                    self._match(dataclasses.replace(order), price, delta, now)
                return (delta, list(delta.fills)) if delta.fills else (_Delta(), [])

            return await self._transact(match)

    def _mark(self, symbol: str) -> float:
        price = self.marks.get(symbol)
        if price is None:
            price = initial_price(self.seed, symbol)
            self.marks[symbol] = price
        return price

    # ------------------------------------------------------------ internals

    def _validate(self, order: Order) -> str | None:
        if not (order.qty > 0 and math.isfinite(order.qty)):
            return "quantity must be positive"
        if order.order_type is OrderType.LIMIT and not (order.limit_price and order.limit_price > 0):
            return "limit order needs a positive limit price"
        if order.extended_hours and order.order_type is not OrderType.LIMIT:
            return "outside regular hours only limit orders are accepted"   # as Alpaca
        position = self.positions.get(order.symbol)
        held = position.qty if position else 0.0
        increases = abs(held + order.side.sign * order.qty) > abs(held)
        if increases:
            equity, gross = self._equity_and_gross(self.cash, self.positions)
            price = order.limit_price if order.order_type is OrderType.LIMIT else self._mark(order.symbol)
            if order.qty * float(price or 0.0) > max(0.0, 2.0 * equity - gross):
                return "insufficient buying power"
        return None

    def _match(self, order: Order, price: float, delta: _Delta, now: float) -> None:
        """Fill ``order`` (a copy) as far as ``price`` and liquidity allow; record into ``delta``."""
        if order.order_type is OrderType.LIMIT:
            limit = float(order.limit_price or 0.0)
            if (order.side is Side.BUY and price > limit) or (order.side is Side.SELL and price < limit):
                delta.orders.setdefault(order.client_order_id, order)
                return
        remaining = order.qty - order.filled_qty
        qty = min(remaining, self.liquidity)
        if qty <= 0:
            return
        fill_no = len(self.fills) + len(delta.fills) + 1
        fill = Fill(client_order_id=order.client_order_id, symbol=order.symbol, side=order.side, qty=qty,
                    price=price, ts=now, fill_id=f"{order.broker_order_id}-f{fill_no}")
        order.avg_fill_price = (order.avg_fill_price * order.filled_qty + price * qty) / (order.filled_qty + qty)
        order.filled_qty += qty
        order.status = OrderStatus.FILLED if order.filled_qty >= order.qty - 1e-9 else OrderStatus.PARTIALLY_FILLED
        delta.orders[order.client_order_id] = order
        delta.fills.append(fill)
        position = delta.positions.get(order.symbol)
        if position is None:
            position = dataclasses.replace(self.positions.get(order.symbol) or Position(order.symbol))
            delta.positions[order.symbol] = position
        position.apply(fill)
        cash = self.cash if delta.cash is None else delta.cash
        delta.cash = cash - order.side.sign * qty * price

    def _equity_and_gross(self, cash: float, positions: dict[str, Position]) -> tuple[float, float]:
        equity, gross = cash, 0.0
        for symbol, position in positions.items():
            value = position.qty * self._mark(symbol)
            equity += value
            gross += abs(value)
        return equity, gross

    async def _sync(self) -> None:
        """Make the cache the store's state: reload when the store's revision is not the cached one."""
        if self.redis is None:
            return
        raw = await self._redis(self.redis.hget(self.keys.account, "rev"))  # type: ignore[misc]
        rev = int(raw or 0)
        if not self._stale and rev == self._rev:
            return
        record, account = await self._redis(_read_world(self.redis, self.key_prefix))
        self.orders, self.fills, self.submits = record.orders, record.fills, record.submits
        self.cash = self.initial_cash if record.cash is None else record.cash
        self.positions = record.positions
        self._next_order_no = int(account.get("next_order_no") or len(self.orders) + 1)
        self._rev = int(account.get("rev") or 0)
        self._stale = False

    async def _transact(self, compute: Callable[[], tuple[_Delta, T]]) -> T:
        """Sync, compute a change on the cache, commit it on the revision it was computed from."""
        for _ in range(8):
            await self._sync()
            delta, result = compute()
            try:
                await self._commit(delta)
            except _StaleRevision:
                self._stale = True
                continue
            return result
        raise BrokerError("simulated exchange storage keeps changing under this exchange")

    async def _commit(self, delta: _Delta) -> None:
        """Persist ``delta`` atomically if the store is still at the cached revision, then apply it in memory.

        Memory never runs ahead of Redis; after a storage error the cache is marked stale, because
        the write may have landed even though its reply was lost.
        """
        if not (delta.orders or delta.fills or delta.submits or delta.cash is not None or delta.positions
                or delta.next_order_no is not None):
            return
        positions = {**self.positions, **delta.positions}
        if self.redis is not None:
            account: dict[str, str] = {}
            if delta.cash is not None:
                account["cash"] = repr(delta.cash)
            if delta.positions:
                account["positions"] = json.dumps({s: dataclasses.asdict(p) for s, p in positions.items()})
            if delta.next_order_no is not None:
                account["next_order_no"] = str(delta.next_order_no)
            change = {"orders": {coid: _order_json(o) for coid, o in delta.orders.items()},
                      "fills": [_fill_json(f) for f in delta.fills],
                      "submits": [json.dumps(dataclasses.asdict(s)) for s in delta.submits],
                      "account": account}
            # cjson decodes an empty JSON object and an empty array alike; both iterate as nothing.
            try:
                applied, rev = await self._redis(self._cas(
                    keys=[self.keys.account, self.keys.orders, self.keys.fills, self.keys.submits],
                    args=[str(self._rev), json.dumps(change, separators=(",", ":"))]))
            except BrokerError:
                self._stale = True
                raise
            if not int(applied):
                raise _StaleRevision()
            self._rev = int(rev)
        self.orders.update(delta.orders)
        self.fills.extend(delta.fills)
        self.submits.extend(delta.submits)
        self.positions = positions
        if delta.cash is not None:
            self.cash = delta.cash
        if delta.next_order_no is not None:
            self._next_order_no = delta.next_order_no

    async def _redis(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except (redis.exceptions.RedisError, OSError) as exc:
            raise BrokerError(f"simulated exchange storage unavailable: {exc.__class__.__name__}") from exc

    async def _wire_delay(self) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    def _require_connected(self) -> None:
        if not self._connected:
            raise BrokerError("simulated exchange not connected")
