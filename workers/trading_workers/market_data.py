"""The market-data worker role: publishes quotes to the bus on the session clock.

For the simulated broker the quotes are the exchange's own deterministic
price process (``brokers.simulated.PriceProcess``), sampled every
``TRADING_MD_INTERVAL`` real seconds (default 0.5). One step of the
process is that interval times the clock's speed in session time, and
step ``k`` is the price at ``clock start + k * step``: a restarted worker
(or a second replica) computes the same price for the same step, and the
idempotency key ``<symbol>:<step>`` lets consumers drop repeats.

Besides the session's symbols it publishes the RiskPolicy's market circuit
breaker references (``circuitBreaker.indexSymbol`` and ``volatilitySymbol``),
re-read every ``POLICY_REFRESH_SECONDS``, so the risk worker can measure the
index drop and the volatility level without the user trading them.

For Alpaca the quotes come from Alpaca's data stream, which belongs to the
Alpaca market-data module (``trading_workers.brokers.alpaca_data.run_market_data``: alpaca-py's
quote stream, REST snapshots as fallback).
"""

from __future__ import annotations

import logging
import math
import os
import time

from trading_operator.api import metric_names as mn
from trading_workers import bus as bus_mod
from trading_workers.brokers.simulated import PriceProcess
from trading_workers.domain import Quote
from trading_workers.errors import ConfigError, TransientError
from trading_workers.runtime import Runtime

log = logging.getLogger("trading_workers.market_data")

ENV_INTERVAL = "TRADING_MD_INTERVAL"
QUOTES = mn.collector(mn.MARKET_DATA_QUOTES)
STEP = mn.collector(mn.MARKET_DATA_STEP)
MAX_CATCH_UP = 3  # after a pause, publish at most this many past steps; older ones are history
POLICY_REFRESH_SECONDS = 30.0


async def reference_symbols(rt: Runtime) -> list[str]:
    """The circuit breaker's index and volatility symbols from the session's RiskPolicy (none if unreadable)."""
    if rt.kube is None:
        return []
    from trading_operator.api.riskpolicy import RiskPolicySpec
    from trading_workers.errors import TradingError

    try:
        obj = await rt.kube.get_policy(rt.settings.namespace, rt.config.risk_policy_name)
        breaker = RiskPolicySpec.model_validate(obj.get("spec") or {}).circuit_breaker
    except (TradingError, ValueError) as exc:
        log.warning("circuit breaker symbols unknown", extra={"error": str(exc)})
        return []
    return [breaker.index_symbol, breaker.volatility_symbol] if breaker.enabled else []


def interval_seconds() -> float:
    raw = os.environ.get(ENV_INTERVAL, "0.5")
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_INTERVAL} must be a number of seconds, got {raw!r}") from exc
    if not 0.01 <= value <= 3600:
        raise ConfigError(f"{ENV_INTERVAL} must be between 0.01 and 3600 seconds")
    return value


async def run(rt: Runtime) -> None:
    cfg = rt.config
    if cfg.broker.kind != "simulated":
        from trading_workers.brokers.alpaca_data import run_market_data

        await run_market_data(rt)
        return
    interval = interval_seconds()
    speed = cfg.clock.speed if cfg.clock.mode == "simulated" else 1.0
    step_seconds = interval * speed
    sim = cfg.broker.simulated
    process = PriceProcess(sim.seed, sim.volatility, step_seconds, sim.return_autocorrelation)
    origin = (cfg.clock.start or cfg.clock_anchor) if cfg.clock.mode == "simulated" else cfg.clock_anchor
    client = bus_mod.connect(rt.settings.redis_url)
    bus = bus_mod.Bus(client, rt.redis_prefix)
    ok = {"ready": False}
    rt.health.add("bus", lambda: (ok["ready"], "redis unreachable"))
    last_step = -1
    symbols = list(cfg.symbols)
    policy_read = -math.inf
    try:
        while not rt.stop.is_set():
            if time.monotonic() - policy_read > POLICY_REFRESH_SECONDS:
                policy_read = time.monotonic()
                symbols = list(dict.fromkeys([*cfg.symbols, *await reference_symbols(rt)]))
            now = rt.session_now()
            current = max(0, math.floor((now - origin).total_seconds() / step_seconds))
            first = max(last_step + 1, current - MAX_CATCH_UP + 1)
            try:
                for step in range(first, current + 1):
                    ts = origin.timestamp() + step * step_seconds
                    for symbol in symbols:
                        quote = Quote(symbol=symbol, price=process.price(symbol, step), ts=ts, seq=step + 1)
                        await bus.publish(bus_mod.MARKET_DATA, bus_mod.encode_quote(quote))
                        QUOTES.inc()
                    last_step = step
                    STEP.set(step)
                ok["ready"] = True
            except TransientError as exc:
                ok["ready"] = False
                log.warning("cannot publish quotes; will retry", extra={"error": str(exc)})
            await rt.sleep(max(0.01, interval - (rt.session_now() - now).total_seconds() / speed))
    finally:
        await client.aclose()

