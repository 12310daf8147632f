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
the outside world: if the executor is SIGKILLed and restarted, the
exchange it reconnects to must still know every order it accepted. So
every state change is written to Redis (keys under the session's prefix)
in one MULTI transaction *before* the caller sees its result, and
``connect`` reloads that state. If Redis is down the exchange is down
(``BrokerError``), exactly like a remote broker would be. Every submit the
exchange receives, including idempotent repeats, is recorded, so tests
check what reached the broker, not what the executor believes it sent.
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
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
import redis.exceptions

from trading_workers.brokers.base import BrokerError
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
    """Deterministic GBM: ``price(symbol, step)`` depends only on seed, volatility, step size and step."""

    def __init__(self, seed: int, volatility: float, step_seconds: float) -> None:
        self.seed = seed
        self.sigma = volatility * math.sqrt(max(step_seconds, 0.0) / TRADING_DAY_SECONDS)
        self._state: dict[str, tuple[random.Random, int, float]] = {}

    def price(self, symbol: str, step: int) -> float:
        """Price at ``step`` (0 is the opening price). Sequential access is O(1) per step."""
        if step < 0:
            raise ValueError("step must be >= 0")
        state = self._state.get(symbol)
        if state is None or state[1] > step:
            state = (random.Random(_symbol_seed(self.seed, symbol)), 0, initial_price(self.seed, symbol))
        rng, current, price = state
        sigma, drift = self.sigma, -0.5 * self.sigma * self.sigma
        while current < step:
            price = max(0.01, price * math.exp(drift + sigma * rng.gauss(0.0, 1.0)))
            current += 1
        self._state[symbol] = (rng, current, price)
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
    keys = _Keys(key_prefix)
    submits = [SubmitRecord(**json.loads(raw)) for raw in await client.lrange(keys.submits, 0, -1)]  # type: ignore[misc]
    orders = {k.decode() if isinstance(k, bytes) else k: _order_from_json(v)
              for k, v in (await client.hgetall(keys.orders)).items()}  # type: ignore[misc]
    fills = [_fill_from_json(raw) for raw in await client.lrange(keys.fills, 0, -1)]  # type: ignore[misc]
    account = await client.hgetall(keys.account)  # type: ignore[misc]
    account = {(k.decode() if isinstance(k, bytes) else k): v for k, v in account.items()}
    cash = float(account["cash"]) if "cash" in account else None
    positions = {s: Position(**p) for s, p in json.loads(account.get("positions", "{}")).items()}
    return BrokerRecord(submits=submits, orders=orders, fills=fills, cash=cash, positions=positions)


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
    durable_cursor = True  # fills_since cursors index the fill list persisted in Redis: valid across restarts
    session_scoped = True  # one exchange per session: every order it holds is this session's

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
        self._lock = asyncio.Lock()
        self._connected = False

    # ------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Load the persisted world (or create it). Raises ``BrokerError`` if Redis is unreachable."""
        async with self._lock:
            if self.redis is not None:
                record = await self._redis(read_record(self.redis, self.key_prefix))
                if record.cash is None:
                    await self._redis(self.redis.hset(self.keys.account, mapping={  # type: ignore[misc]
                        "cash": repr(self.initial_cash), "positions": "{}", "next_order_no": "1"}))
                else:
                    raw_next = await self._redis(self.redis.hget(self.keys.account, "next_order_no"))  # type: ignore[misc]
                    self.orders, self.fills, self.submits = record.orders, record.fills, record.submits
                    self.cash, self.positions = record.cash, record.positions
                    self._next_order_no = int(raw_next or len(self.orders) + 1)
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
            now = self.clock()
            existing = self.orders.get(order.client_order_id)
            if existing is not None:
                await self._commit(_Delta(submits=[SubmitRecord(order.client_order_id, now, True)]))
                return dataclasses.replace(existing)
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
            await self._commit(delta)
            return dataclasses.replace(delta.orders[placed.client_order_id])

    async def cancel(self, client_order_id: str) -> None:
        """Cancel an open order; a no-op for unknown or closed orders (idempotent)."""
        await self._wire_delay()
        async with self._lock:
            self._require_connected()
            order = self.orders.get(client_order_id)
            if order is None or not order.status.is_open:
                return
            await self._commit(_Delta(orders={client_order_id: dataclasses.replace(
                order, status=OrderStatus.CANCELED)}))

    async def get_order(self, client_order_id: str) -> Order | None:
        self._require_connected()
        order = self.orders.get(client_order_id)
        return dataclasses.replace(order) if order else None

    async def open_orders(self) -> list[Order]:
        self._require_connected()
        return [dataclasses.replace(o) for o in self.orders.values() if o.status.is_open]

    async def account(self) -> Account:
        self._require_connected()
        equity, gross = self._equity_and_gross(self.cash, self.positions)
        positions = {s: dataclasses.replace(p) for s, p in self.positions.items() if p.qty != 0}
        return Account(cash=self.cash, equity=equity, buying_power=max(0.0, 2.0 * equity - gross),
                       positions=positions)

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        self._require_connected()
        return list(self.fills[max(cursor, 0):]), len(self.fills)

    # ------------------------------------------------------------ market

    async def on_quote(self, symbol: str, price: float) -> list[Fill]:
        """A new price for ``symbol``: marks it and matches the symbol's open orders against it."""
        if not (price > 0.0 and math.isfinite(price)):
            return []
        async with self._lock:
            self.marks[symbol] = price
            if not self._connected:
                return []
            open_here = [o for o in self.orders.values() if o.symbol == symbol and o.status.is_open]
            if not open_here:
                return []
            delta = _Delta()
            now = self.clock()
            for order in open_here:
                self._match(dataclasses.replace(order), price, delta, now)
            if not delta.fills:
                return []
            await self._commit(delta)
            return list(delta.fills)

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

    async def _commit(self, delta: _Delta) -> None:
        """Persist ``delta`` atomically, then apply it in memory (memory never runs ahead of Redis)."""
        positions = {**self.positions, **delta.positions}
        if self.redis is not None:
            pipe = self.redis.pipeline(transaction=True)
            for coid, order in delta.orders.items():
                pipe.hset(self.keys.orders, coid, _order_json(order))
            if delta.fills:
                pipe.rpush(self.keys.fills, *[_fill_json(f) for f in delta.fills])
            if delta.submits:
                pipe.rpush(self.keys.submits, *[json.dumps(dataclasses.asdict(s)) for s in delta.submits])
            account: dict[str, str] = {}
            if delta.cash is not None:
                account["cash"] = repr(delta.cash)
            if delta.positions:
                account["positions"] = json.dumps({s: dataclasses.asdict(p) for s, p in positions.items()})
            if delta.next_order_no is not None:
                account["next_order_no"] = str(delta.next_order_no)
            if account:
                pipe.hset(self.keys.account, mapping=cast(Any, account))
            await self._redis(pipe.execute())
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
