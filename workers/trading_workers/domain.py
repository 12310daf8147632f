"""Trading domain types shared by every worker: quotes, order intents, orders, fills.

Plain frozen dataclasses (not pydantic) because they sit on the hot order
path; validation happens once, where data enters from the bus or a broker.
``client_order_id`` is deterministic (derived from session, strategy signal
and sequence) so a retried submit is recognised by the broker as the same
order, never a second one.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(enum.StrEnum):
    NEW = "new"                  # journaled, not yet acknowledged by the broker
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    price: float
    ts: float  # session-clock epoch seconds
    seq: int = 0


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What a strategy wants; becomes an Order once it passes pre-trade checks."""

    symbol: str
    side: Side
    qty: float
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    signal_id: str = ""  # idempotency key from the strategy (bus message id based)


@dataclass(frozen=True, slots=True)
class Signal:
    """A model's view on a symbol (the inference worker's output, the model strategy's input)."""

    symbol: str
    side: Side
    qty: float
    signal_id: str  # deterministic (model:<symbol>:<quote seq>): the idempotency key of the order it becomes
    kind: str = "model"
    score: float = 0.0
    expected_return: float = 0.0
    price: float = 0.0
    ts: float = 0.0
    seq: int = 0
    model: str = ""

    def intent(self) -> OrderIntent:
        """The order intent this signal asks for (a market order under the signal's id)."""
        return OrderIntent(self.symbol, self.side, self.qty, signal_id=self.signal_id)


def client_order_id(session_uid: str, signal_id: str) -> str:
    """Deterministic id: the same signal always maps to the same broker order (max 48 chars, Alpaca's limit)."""
    digest = hashlib.sha256(f"{session_uid}:{signal_id}".encode()).hexdigest()[:32]
    return f"tp-{digest}"


@dataclass(slots=True)
class Order:
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    status: OrderStatus = OrderStatus.NEW
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    broker_order_id: str | None = None
    reject_reason: str | None = None
    extended_hours: bool = False   # sent in PreMarket or AfterHours (a DAY limit order at the broker)


@dataclass(frozen=True, slots=True)
class Fill:
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    ts: float
    fill_id: str = ""


@dataclass(slots=True)
class Position:
    symbol: str
    qty: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0

    def apply(self, fill: Fill) -> None:
        signed = fill.qty * fill.side.sign
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            total = self.qty + signed
            self.avg_price = (self.avg_price * abs(self.qty) + fill.price * abs(signed)) / abs(total)
            self.qty = total
            return
        closing = min(abs(signed), abs(self.qty))
        self.realized_pnl += closing * (fill.price - self.avg_price) * (1 if self.qty > 0 else -1)
        remaining = self.qty + signed
        if remaining == 0 or (remaining > 0) == (self.qty > 0):
            self.qty = remaining
            if remaining == 0:
                self.avg_price = 0.0
        else:
            self.qty, self.avg_price = remaining, fill.price


@dataclass(slots=True)
class Account:
    cash: float
    equity: float
    buying_power: float
    positions: dict[str, Position] = field(default_factory=dict)
