"""The broker protocol every adapter implements.

The executor only speaks this protocol, so the simulated exchange and
Alpaca are interchangeable. ``submit`` must be idempotent on
``client_order_id``: submitting an id the broker already knows returns the
existing order instead of placing a second one (Alpaca rejects duplicates
with 422; adapters translate that into "return the existing order").
"""

from __future__ import annotations

from typing import Protocol

from trading_workers.domain import Account, Fill, Order
from trading_workers.errors import PermanentError, TransientError


class BrokerError(TransientError):
    """The broker could not be reached or refused the request for a transient reason (retry)."""


class OrderRejected(PermanentError):
    """The broker refused the order for good (do not retry)."""


class Broker(Protocol):
    name: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, order: Order) -> Order:
        """Place the order; idempotent on ``order.client_order_id``."""

    async def cancel(self, client_order_id: str) -> None: ...

    async def get_order(self, client_order_id: str) -> Order | None: ...

    async def open_orders(self) -> list[Order]: ...

    async def account(self) -> Account: ...

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        """Fills after ``cursor`` and the new cursor (polling keeps adapters simple and testable)."""
