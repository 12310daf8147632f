"""The strategy worker role: quotes (or model signals) in, order intents out.

Rule-based strategies read the market-data stream; ``model`` reads the
inference workers' signals stream. Either way the worker reads through a
consumer group (at-least-once) and publishes an intent whose idempotency
key is the signal id before acknowledging the input, so a crash between
the two re-publishes the same intent, which the executor recognises.

One replica per session: a rule strategy's rolling windows need every
quote of a symbol, and a consumer group would split them between replicas.
"""

from __future__ import annotations

import logging
import socket

from trading_operator.api import metric_names as mn
from trading_workers import bus as bus_mod
from trading_workers.domain import OrderIntent, Quote, Signal
from trading_workers.errors import TransientError
from trading_workers.runtime import Runtime
from trading_workers.strategy.rules import make_strategy

log = logging.getLogger("trading_workers.strategy")

INTENTS = mn.collector(mn.STRATEGY_INTENTS)


async def run(rt: Runtime) -> None:
    client = bus_mod.connect(rt.settings.redis_url)
    bus = bus_mod.Bus(client, rt.redis_prefix)
    consumer_name = socket.gethostname()
    symbols = set(rt.config.symbols)

    # Intents decided but not yet on the bus. The strategy's state has already moved on (it will
    # skip the redelivered quote), so an intent that failed to publish is kept here and sent first.
    backlog: list[OrderIntent] = []

    async def publish(intent: OrderIntent | None) -> None:
        if intent is not None:
            backlog.append(intent)
        while backlog:
            head = backlog[0]
            await bus.publish(bus_mod.INTENTS, bus_mod.encode_intent(head))
            backlog.pop(0)
            INTENTS.labels(head.side.value).inc()
            log.info("intent published", extra={"signal_id": head.signal_id, "symbol": head.symbol,
                                                "side": head.side.value, "qty": head.qty})

    consumer: bus_mod.Consumer[Quote] | bus_mod.Consumer[Signal]
    if rt.config.strategy.name == "model":
        async def on_signal(_: str, signal: Signal) -> None:
            if signal.symbol in symbols:
                await publish(signal.intent())

        consumer = bus_mod.Consumer(bus, bus_mod.SIGNALS, "strategy", consumer_name, bus_mod.decode_signal, on_signal)
    else:
        strategy = make_strategy(rt.config.strategy.name, rt.config.strategy.params)

        async def on_quote(_: str, quote: Quote) -> None:
            if quote.symbol not in symbols:
                return
            await publish(strategy.on_quote(quote))

        consumer = bus_mod.Consumer(bus, bus_mod.MARKET_DATA, "strategy", consumer_name, bus_mod.decode_quote,
                                    on_quote)
    ready = {"ok": False}
    rt.health.add("bus", lambda: (ready["ok"], "redis unreachable"))

    def polled() -> None:
        ready["ok"] = True

    def failed(exc: TransientError) -> None:
        ready["ok"] = False
        log.warning("strategy step failed; will retry", extra={"error": str(exc)})

    try:
        await consumer.run(stop=rt.stop, on_polled=polled, on_error=failed)
    finally:
        await client.aclose()
