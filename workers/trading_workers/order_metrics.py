"""The executor's order-path metrics: broker connectivity, broker API latency and outcome, slippage.

Kept out of the executor so its order path gains one call per measurement and nothing else.
Slippage is each fill's price against the quote the executor had for the symbol when it sent the
order, signed so that a worse price (paying more on a buy, receiving less on a sell) is positive.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

from trading_operator.api import metric_names as mn
from trading_workers.domain import Fill, Order

BROKER_CONNECTED = mn.collector(mn.BROKER_CONNECTED)
REQUESTS = mn.collector(mn.BROKER_REQUESTS)
REQUEST_SECONDS = mn.collector(mn.BROKER_REQUEST_SECONDS)
SLIPPAGE = mn.collector(mn.SLIPPAGE)

OUTCOMES = ("ok", "rejected", "error")
for _outcome in OUTCOMES:
    REQUESTS.labels(_outcome)  # every outcome exported from the start (a ratio needs its zeros)

_REFERENCE_CAP = 10_000
_reference: OrderedDict[str, tuple[float, int]] = OrderedDict()   # client_order_id -> (quote at send, side sign)


def submitted(order: Order, outcome: str, started: float, quote: float | None) -> None:
    """One order submission finished with ``outcome`` (ok, rejected, error); ``started`` is its perf_counter."""
    REQUEST_SECONDS.observe(time.perf_counter() - started)
    REQUESTS.labels(outcome).inc()
    if outcome == "ok" and quote is not None and quote > 0:
        _reference[order.client_order_id] = (quote, order.side.sign)
        while len(_reference) > _REFERENCE_CAP:
            _reference.popitem(last=False)


def filled(fills: Iterable[Fill]) -> None:
    """Observe the slippage of fills of orders whose reference quote is known."""
    for fill in fills:
        ref = _reference.get(fill.client_order_id)
        if ref is not None:
            quote, sign = ref
            SLIPPAGE.observe((fill.price - quote) / quote * 100.0 * sign)


def broker_connected(ok: bool) -> None:
    BROKER_CONNECTED.set(1 if ok else 0)
