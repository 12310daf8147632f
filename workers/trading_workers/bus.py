"""The message bus: Redis Streams between market data, strategies and the executor.

Three streams per session, all under the session's key prefix
(``tp:{namespace/name}``, a Redis Cluster hash tag, so one session's keys
live on one shard), each carrying one typed message of ``domain``:

``md``       ``Quote``         from the market-data worker
``signals``  ``Signal``        from the inference workers (read by the model strategy)
``intents``  ``OrderIntent``   from the strategy (read by the executor)

On the wire every message is ``{"id": <idempotency key>, "data": <JSON object>}`` and the JSON keys
are camelCase, as in the Kubernetes API (``signalId``, ``orderType``, ``limitPrice``,
``expectedReturn``): one convention for every stream. ``encode_*``/``decode_*`` are the only
places that know it.

Delivery is at-least-once: consumers read through a consumer group and
``XACK`` only after the handler finished, so a consumer killed mid-message
gets the message again (its own pending entries are re-read, in order, at
start and after any failure — a handler's, an XACK's, a read's — before
anything newer; entries left pending by a consumer that never came back
are claimed after an idle time). Duplicates are therefore possible by design; every message
carries an idempotency key (``id``) and the consumers are idempotent on it
(the executor maps an intent's key to a deterministic ``client_order_id``
that the journal and the broker both refuse to take twice).

A message that cannot be decoded is logged, counted
(``trading_bus_malformed_total``) and acknowledged: garbage is never
retried and never stops the worker. A message whose handler keeps failing
for other reasons goes to the ``dead`` stream after a bounded number of
deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
import redis.exceptions

from trading_operator.api import metric_names as mn
from trading_operator.api.session import SYMBOL_PATTERN
from trading_workers.domain import OrderIntent, OrderType, Quote, Side, Signal
from trading_workers.errors import DependencyUnavailable, MalformedMessage, PermanentError, TransientError

log = logging.getLogger("trading_workers.bus")

MARKET_DATA = "md"
SIGNALS = "signals"
INTENTS = "intents"
DEAD = "dead"

MALFORMED = mn.collector(mn.BUS_MALFORMED)
CONSUMED = mn.collector(mn.BUS_CONSUMED)
RETRIED = mn.collector(mn.BUS_RETRIED)
DEAD_LETTERED = mn.collector(mn.BUS_DEAD_LETTERED)
PUBLISHED = mn.collector(mn.BUS_PUBLISHED)

REDIS_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError,
                   redis.exceptions.BusyLoadingError, redis.exceptions.TryAgainError)

_SYMBOL = re.compile(SYMBOL_PATTERN)
T = TypeVar("T")
Fields = dict[str, str]


def session_prefix(namespace: str, name: str) -> str:
    """Key prefix of a session's Redis keys (bus streams, simulated exchange)."""
    return f"tp:{{{namespace}/{name}}}"


def connect(url: str) -> aioredis.Redis:
    """A Redis client that fails fast when the server is gone (the executor must notice within a second)."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0, health_check_interval=5,
                                   decode_responses=True)


# --------------------------------------------------------------------------- codecs

def _payload(fields: Any) -> dict[str, Any]:
    if not isinstance(fields, dict) or "data" not in fields:
        raise MalformedMessage("no data field")
    try:
        data = json.loads(fields["data"])
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"data is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessage("data is not an object")
    return data


def _symbol(data: dict[str, Any]) -> str:
    symbol = data.get("symbol")
    if not isinstance(symbol, str) or len(symbol) > 16 or not _SYMBOL.match(symbol):
        raise MalformedMessage(f"bad symbol {symbol!r}")
    return symbol


def _number(data: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedMessage(f"{key} is not a finite number: {value!r}")
    return float(value)


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedMessage(f"{key} is not an integer: {value!r}")
    return value


def _dump(data: dict[str, Any], key: str) -> Fields:
    return {"id": key, "data": json.dumps(data, separators=(",", ":"))}


def encode_quote(quote: Quote) -> Fields:
    return _dump({"symbol": quote.symbol, "price": quote.price, "ts": quote.ts, "seq": quote.seq},
                 f"{quote.symbol}:{quote.seq}")


def decode_quote(fields: Any) -> Quote:
    data = _payload(fields)
    price = _number(data, "price")
    if price is None or price <= 0:
        raise MalformedMessage(f"price must be positive: {price!r}")
    return Quote(symbol=_symbol(data), price=price, ts=float(_number(data, "ts") or 0.0), seq=_int(data, "seq"))


def _signal_id(data: dict[str, Any]) -> str:
    signal_id = data.get("signalId")
    if not isinstance(signal_id, str) or not signal_id or len(signal_id) > 200:
        raise MalformedMessage("signalId (the idempotency key) must be a non-empty string")
    return signal_id


def _side(data: dict[str, Any]) -> Side:
    try:
        return Side(str(data.get("side")))
    except ValueError as exc:
        raise MalformedMessage(str(exc)) from exc


def encode_signal(signal: Signal) -> Fields:
    return _dump({"kind": signal.kind, "symbol": signal.symbol, "side": signal.side.value, "qty": signal.qty,
                  "score": signal.score, "expectedReturn": signal.expected_return, "price": signal.price,
                  "ts": signal.ts, "seq": signal.seq, "signalId": signal.signal_id, "model": signal.model},
                 signal.signal_id)


def decode_signal(fields: Any) -> Signal:
    data = _payload(fields)
    return Signal(symbol=_symbol(data), side=_side(data), qty=float(_number(data, "qty") or 0.0),
                  signal_id=_signal_id(data), kind=str(data.get("kind") or "model"),
                  score=float(_number(data, "score", optional=True) or 0.0),
                  expected_return=float(_number(data, "expectedReturn", optional=True) or 0.0),
                  price=float(_number(data, "price", optional=True) or 0.0),
                  ts=float(_number(data, "ts", optional=True) or 0.0), seq=_int(data, "seq"),
                  model=str(data.get("model") or ""))


def encode_intent(intent: OrderIntent) -> Fields:
    return _dump({"symbol": intent.symbol, "side": intent.side.value, "qty": intent.qty,
                  "orderType": intent.order_type.value, "limitPrice": intent.limit_price,
                  "signalId": intent.signal_id}, intent.signal_id)


def decode_intent(fields: Any) -> OrderIntent:
    """Decode and validate the shape; business limits (qty > 0, collars) are pre-trade checks, not decoding."""
    data = _payload(fields)
    signal_id = _signal_id(data)
    side = _side(data)
    try:
        order_type = OrderType(str(data.get("orderType", "market")))
    except ValueError as exc:
        raise MalformedMessage(str(exc)) from exc
    qty = _number(data, "qty")
    limit_price = _number(data, "limitPrice", optional=True)
    if order_type is OrderType.LIMIT and limit_price is None:
        raise MalformedMessage("a limit order needs limitPrice")
    return OrderIntent(symbol=_symbol(data), side=side, qty=float(qty or 0.0), order_type=order_type,
                       limit_price=limit_price if order_type is OrderType.LIMIT else None, signal_id=signal_id)


# --------------------------------------------------------------------------- bus

class Bus:
    """One session's streams."""

    def __init__(self, client: aioredis.Redis, prefix: str, *, maxlen: int = 200_000) -> None:
        self.client = client
        self.prefix = prefix
        self.maxlen = maxlen

    def key(self, stream: str) -> str:
        return f"{self.prefix}:stream:{stream}"

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except REDIS_TRANSIENT as exc:
            raise DependencyUnavailable("redis", exc.__class__.__name__) from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self.client.ping()))  # type: ignore[arg-type]
        except DependencyUnavailable:
            return False

    async def publish(self, stream: str, fields: Fields) -> str:
        msg_id = await self._call(self.client.xadd(self.key(stream), fields,  # type: ignore[arg-type]
                                                   maxlen=self.maxlen, approximate=True))
        PUBLISHED.labels(stream).inc()
        return str(msg_id)

    async def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        try:
            await self._call(self.client.xgroup_create(self.key(stream), group, id=start, mkstream=True))
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_group(self, stream: str, group: str, consumer: str, *, pending: bool, count: int = 64,
                         block_ms: int = 1000) -> list[tuple[str, Fields]]:
        """Own pending entries (``pending=True``) or new ones."""
        reply: Any = await self._call(self.client.xreadgroup(
            group, consumer, {self.key(stream): "0" if pending else ">"}, count=count,
            block=None if pending else block_ms))
        if not reply:
            return []
        return [(str(mid), dict(fields or {})) for mid, fields in reply[0][1]]

    async def ack(self, stream: str, group: str, *ids: str) -> None:
        if ids:
            await self._call(self.client.xack(self.key(stream), group, *ids))

    async def claim_idle(self, stream: str, group: str, consumer: str, min_idle_ms: int,
                         count: int = 64) -> list[tuple[str, Fields]]:
        """Take over entries another (dead) consumer left pending for ``min_idle_ms``."""
        reply: Any = await self._call(self.client.xautoclaim(self.key(stream), group, consumer, min_idle_ms,
                                                        start_id="0-0", count=count))
        return [(str(mid), dict(fields or {})) for mid, fields in (reply[1] if reply else [])
                if fields is not None]

    async def pending_count(self, stream: str, group: str) -> int:
        info = await self._call(self.client.xpending(self.key(stream), group))
        return int(info.get("pending", 0)) if isinstance(info, dict) else 0

    async def latest(self, stream: str, count: int) -> list[tuple[str, Fields]]:
        """The newest ``count`` entries, oldest first."""
        reply: Any = await self._call(self.client.xrevrange(self.key(stream), count=count))
        return [(str(mid), dict(fields)) for mid, fields in reversed(reply)]

    async def read_after(self, stream: str, last_id: str, *, count: int = 256,
                         block_ms: int = 1000) -> list[tuple[str, Fields]]:
        """Entries after ``last_id`` without a consumer group (for state that is rebuilt, e.g. marks).

        ``block_ms=0`` means do not wait (Redis itself reads BLOCK 0 as "wait forever": a silent feed
        would stall the caller until its socket timed out).
        """
        block = block_ms if block_ms > 0 else None
        reply: Any = await self._call(self.client.xread({self.key(stream): last_id}, count=count, block=block))
        if not reply:
            return []
        return [(str(mid), dict(fields)) for mid, fields in reply[0][1]]

    async def length(self, stream: str) -> int:
        return int(await self._call(self.client.xlen(self.key(stream))))


class Consumer(Generic[T]):
    """At-least-once consumption of one stream by one member of a consumer group.

    ``handle`` runs once per decoded message; the message is acknowledged after
    it returns. ``TransientError`` leaves the message pending (it is re-read,
    in order, once ``poll`` runs again); ``PermanentError`` and decode
    failures are logged, counted and acknowledged; any other exception is
    retried up to ``max_deliveries`` times and then dead-lettered.
    """

    def __init__(self, bus: Bus, stream: str, group: str, consumer: str, decode: Callable[[Fields], T],
                 handle: Callable[[str, T], Awaitable[None]], *, count: int = 64, block_ms: int = 1000,
                 claim_idle_ms: int = 30_000, max_deliveries: int = 5) -> None:
        self.bus, self.stream, self.group, self.consumer = bus, stream, group, consumer
        self.decode, self.handle = decode, handle
        self.count, self.block_ms = count, block_ms
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self._pending_first = True  # after a start or a failure, re-read our own pending entries first
        self._failures: dict[str, int] = {}
        self._ready = False
        self._last_claim = 0.0

    async def poll(self) -> int:
        """Read and process one batch; returns how many messages were acknowledged.

        Raises ``DependencyUnavailable`` if Redis is down and ``TransientError`` if a handler
        could not finish (the message stays pending).
        """
        try:
            return await self._poll()
        except TransientError:
            # Whatever failed (a handler, an XACK, a read whose reply was lost), entries may now be
            # ours and unacknowledged: read them first, in order, before anything newer. Left to the
            # idle claim they would come back only after ``claim_idle_ms``, behind newer entries.
            self._pending_first = True
            raise

    async def _poll(self) -> int:
        if not self._ready:
            await self.bus.ensure_group(self.stream, self.group)
            self._ready = True
        batch: list[tuple[str, Fields]] = []
        if self._pending_first:
            batch = await self.bus.read_group(self.stream, self.group, self.consumer, pending=True, count=self.count)
            self._pending_first = bool(batch)
        if not batch:
            batch = await self._claim() or await self.bus.read_group(
                self.stream, self.group, self.consumer, pending=False, count=self.count, block_ms=self.block_ms)
        done = 0
        for msg_id, fields in batch:
            if await self._process(msg_id, fields):
                done += 1
        return done

    async def run(self, *, stop: asyncio.Event | None = None, gate: Callable[[], Awaitable[bool]] | None = None,
                  on_polled: Callable[[], None] | None = None, on_error: Callable[[TransientError], None] | None = None,
                  retry_after: float = 0.5) -> None:
        """The one consumer loop: poll until ``stop`` is set (or the task is cancelled).

        ``gate`` (optional) is awaited before every poll and returns False while the consumer must not
        read (it does its own waiting); ``on_polled`` runs after every successful poll; a
        ``TransientError`` (Redis down, a handler that could not finish) goes to ``on_error`` and the
        loop waits ``retry_after`` seconds: the message stays pending and is read again.
        """
        while stop is None or not stop.is_set():
            if gate is not None and not await gate():
                continue
            try:
                await self.poll()
            except TransientError as exc:
                if on_error is not None:
                    on_error(exc)
                await asyncio.sleep(retry_after)
                continue
            if on_polled is not None:
                on_polled()

    async def _claim(self) -> list[tuple[str, Fields]]:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_claim < self.claim_idle_ms / 3000:
            return []
        self._last_claim = loop.time()
        return await self.bus.claim_idle(self.stream, self.group, self.consumer, self.claim_idle_ms, self.count)

    async def _process(self, msg_id: str, fields: Fields) -> bool:
        try:
            message = self.decode(fields)
        except MalformedMessage as exc:
            MALFORMED.labels(self.stream).inc()
            log.warning("malformed message skipped", extra={"stream": self.stream, "message_id": msg_id,
                                                            "error": str(exc)})
            await self.bus.ack(self.stream, self.group, msg_id)
            return True
        try:
            await self.handle(msg_id, message)
        except TransientError:
            RETRIED.labels(self.stream).inc()
            raise
        except PermanentError as exc:
            log.warning("message refused for good", extra={"stream": self.stream, "message_id": msg_id,
                                                           "error": str(exc)})
        except Exception as exc:
            failures = self._failures.get(msg_id, 0) + 1
            self._failures[msg_id] = failures
            if failures < self.max_deliveries:
                log.exception("handler failed; message stays pending", extra={"stream": self.stream,
                                                                              "message_id": msg_id})
                raise TransientError(f"handler failed on {msg_id}") from exc
            log.exception("handler keeps failing; message dead-lettered", extra={"stream": self.stream,
                                                                                 "message_id": msg_id})
            DEAD_LETTERED.labels(self.stream).inc()
            with contextlib.suppress(DependencyUnavailable):
                await self.bus.publish(DEAD, {"stream": self.stream, "id": msg_id, **fields})
            self._failures.pop(msg_id, None)
        await self.bus.ack(self.stream, self.group, msg_id)
        CONSUMED.labels(self.stream).inc()
        return True
