"""The broker protocol every adapter implements.

The executor only speaks this protocol, so the simulated exchange and
Alpaca are interchangeable. ``submit`` must be idempotent on
``client_order_id``: submitting an id the broker already knows returns the
existing order instead of placing a second one (Alpaca rejects duplicates
with 422; adapters translate that into "return the existing order").

What a broker can do beyond the protocol is stated, not probed: every
adapter carries ``capabilities`` (a ``BrokerCapabilities``), and the
executor reads it to decide how to resume the fill cursor, whether an open
order it does not know may be adopted, how often to check the broker, and
whether to feed it quotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from trading_workers.domain import Account, Fill, Order, Position
from trading_workers.errors import PermanentError, TransientError


class BrokerError(TransientError):
    """The broker could not be reached or refused the request for a transient reason (retry)."""


class OrderRejected(PermanentError):
    """The broker refused the order for good (do not retry)."""


@dataclass(frozen=True, slots=True)
class BrokerCapabilities:
    """What an adapter can do, as the executor relies on it."""

    durable_cursor: bool = False
    """``fills_since`` cursors stay valid across restarts (else the executor starts from 0; fill ids dedupe)."""
    session_scoped: bool = False
    """Every order the broker holds belongs to this session (else the account may be shared with others)."""
    cheap_ping: bool = False
    """``ping`` is cheap enough to call every liveness tick (else the executor calls it every 15 s)."""
    quote_driven: bool = False
    """The broker matches orders against the quotes it is fed through ``on_quote`` (the simulated exchange)."""


class Broker(Protocol):
    name: str
    capabilities: BrokerCapabilities

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, order: Order) -> Order:
        """Place the order; idempotent on ``order.client_order_id``."""

    async def cancel(self, client_order_id: str) -> None: ...

    async def ping(self) -> bool:
        """Whether the broker can serve requests now (raises ``BrokerError`` or returns False when not)."""

    async def on_quote(self, symbol: str, price: float) -> list[Fill]:
        """A quote from the bus; the fills it caused (only called when ``capabilities.quote_driven``)."""

    async def get_order(self, client_order_id: str) -> Order | None: ...

    async def open_orders(self) -> list[Order]: ...

    async def account(self) -> Account: ...

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        """Fills after ``cursor`` and the new cursor (polling keeps adapters simple and testable)."""

    async def held_positions(self) -> dict[str, Position]:
        """The broker's positions now, by symbol (quantity signed; flat symbols left out)."""

    async def fills_after(self, since: float) -> list[Fill]:
        """Every fill the broker reports at or after ``since`` (epoch seconds), oldest first, read afresh
        (not through the fill cursor): the end-of-day reconciliation's view of the day."""
