"""The order path, in one process: intent -> pre-trade checks -> journal -> simulated-exchange submit.

Issue 8, figure 3. Goals: pre-trade checks p99 <= 20 us; the path p99 <= 200 us
without the journal commit.

What one order is, here (the executor's ``_on_intent`` and ``_send_journaled``,
minus the bus read and ack): the intent as it comes off the bus (the wire
dict) is decoded, its deterministic ``client_order_id`` derived (sha256),
the pre-trade checks run (``PreTradeChecks.check``, metrics on), the order
journaled NEW (PostgreSQL INSERT), submitted to the ``SimulatedExchange``,
the journal row moved to the broker's status (UPDATE), and the local
position/open-order book updated. Every order is timed on its own with
``perf_counter_ns``; the garbage collector stays on (the executor runs with
it). Fills are not journaled here (the executor books them in a separate
loop), and the bus's Redis round trips are not part of "one process".

Variants, over the same pre-built intents (market and marketable limit
orders over 50 symbols, sides chosen to keep positions bounded; the checks
reject some as duplicates, as they should: those intents are timed apart, the
path figures are over orders that reached the exchange):

* **path, no journal, exchange in memory** — the goal's figure.
* **path, no journal, exchange persisted to Redis** — how the executor runs
  the simulated exchange: every state change in one MULTI before submit
  returns (Redis from ``trading_dev.services``: append-only, fsync always).
* **full path** — the above plus the two journal statements, real PostgreSQL
  (``trading_dev.services``); orders/s.
* **journal commit alone** — the INSERT + UPDATE of each order in the full path.
* **checks alone** — ``benchmarks/pretrade.py`` (its own inputs, ~10 % rejected),
  run as it is, in its own process.

Baselines, same run: checks -> an empty call with the same arguments, timed the
same way (timer + call floor); path -> decode + ``client_order_id`` alone (the
per-intent work every order does whatever the checks and broker); Redis exchange
-> the in-memory one; journal -> ``SELECT 1`` round trips through the same pool.

Run::

    .venv/bin/python -m benchmarks orderpath             # ~1 min
    .venv/bin/python -m benchmarks.orderpath --orders 20000 --journal-orders 3000 --json benchmarks/results/orderpath.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import figure, pct, stop_on_sigterm
from trading_dev import services
from trading_workers import bus as bus_mod
from trading_workers.brokers.simulated import SimulatedExchange, initial_price
from trading_workers.domain import Order, OrderIntent, OrderType, Side, client_order_id
from trading_workers.journal import Journal
from trading_workers.pretrade import CheckLimits, PreTradeChecks, TradingState

GOAL_CHECKS_P99_US = 20.0
GOAL_PATH_P99_US = 200.0
COMMAND = ".venv/bin/python -m benchmarks orderpath"
SYMBOLS = [f"S{i:02d}" for i in range(50)]
SESSION_UID = "00000000-0000-0000-0000-0000000bench"
LIMITS = CheckLimits(max_order_notional=100_000, max_position_notional=250_000, max_orders_per_second=1e9,
                     price_collar_pct=5, duplicate_window_seconds=1, max_open_orders=200)


def intents(n: int, seed: int = 7) -> list[dict[str, str]]:
    """Intents as the bus carries them; positions drift back toward flat so notional limits rarely bite."""
    rng = random.Random(seed)
    position = dict.fromkeys(SYMBOLS, 0.0)
    out = []
    for i in range(n):
        symbol = rng.choice(SYMBOLS)
        mark = initial_price(42, symbol)
        qty = float(rng.randint(1, 100))
        exposure = position[symbol] * mark
        side = (Side.SELL if exposure > 0 else Side.BUY) if abs(exposure) > 50_000 else rng.choice((Side.BUY,
                                                                                                   Side.SELL))
        position[symbol] += qty * side.sign
        if rng.random() < 0.3:
            intent = OrderIntent(symbol, side, qty, OrderType.MARKET, None, f"sig-{seed}-{i}")
        else:  # marketable limit: fills at once, so open orders stay few
            off = 1 + side.sign * rng.uniform(0.0005, 0.02)
            intent = OrderIntent(symbol, side, qty, OrderType.LIMIT, round(mark * off, 2), f"sig-{seed}-{i}")
        out.append(bus_mod.encode_intent(intent))
    return out


@dataclass
class Book:
    """The executor's local view: positions and open orders (what the checks read)."""

    positions: dict[str, float] = field(default_factory=dict)
    open_orders: dict[str, Order] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)

    def exposure(self, symbol: str) -> float:
        qty = self.positions.get(symbol, 0.0)
        for order in self.open_orders.values():
            if order.symbol == symbol:
                qty += order.side.sign * (order.qty - order.filled_qty)
        return qty

    def placed(self, order: Order) -> None:
        if order.filled_qty:
            self.positions[order.symbol] = self.positions.get(order.symbol, 0.0) + order.side.sign * order.filled_qty
        if order.status.is_open:
            self.open_orders[order.client_order_id] = order
        else:
            self.open_orders.pop(order.client_order_id, None)


@dataclass
class Run:
    """Per-order latencies (ns) of one variant, and what happened."""

    total: list[int] = field(default_factory=list)        # orders that reached the exchange
    rejections: list[int] = field(default_factory=list)   # intents the checks rejected
    journal: list[int] = field(default_factory=list)
    seconds: float = 0.0
    rejected: int = 0
    sent: int = 0

    def stats(self, values: Sequence[int] | None = None) -> dict[str, float]:
        us = [v / 1000 for v in (self.total if values is None else values)]
        return {"p50_us": pct(us, 50), "p99_us": pct(us, 99), "p999_us": pct(us, 99.9), "max_us": max(us),
                "n": float(len(us))}

    @property
    def per_second(self) -> float:
        """Orders sent to the exchange per second (rejected intents take time too: they are in ``seconds``)."""
        return len(self.total) / self.seconds if self.seconds else 0.0


async def run_path(wire: list[dict[str, str]], exchange: SimulatedExchange, journal: Journal | None) -> Run:
    """The executor's per-intent work, order by order (see module docstring)."""
    await exchange.connect()
    checks = PreTradeChecks(LIMITS)
    book = Book(marks={s: initial_price(exchange.seed, s) for s in SYMBOLS})
    clock = time.perf_counter_ns
    out = Run()
    started = time.perf_counter()
    for fields in wire:
        t0 = clock()
        intent = bus_mod.decode_intent(fields)
        coid = client_order_id(SESSION_UID, intent.signal_id)
        reason = checks.check(intent.symbol, intent.side.sign, intent.qty, intent.limit_price,
                              book.marks.get(intent.symbol), book.exposure(intent.symbol), len(book.open_orders),
                              TradingState.ACTIVE)
        if reason is not None:  # a shorter path (the executor journals the rejection): timed apart
            out.rejected += 1
            out.rejections.append(clock() - t0)
            continue
        order = Order(coid, intent.symbol, intent.side, intent.qty, intent.order_type,
                      intent.limit_price if intent.order_type is OrderType.LIMIT else None)
        if journal is not None:
            j0 = clock()
            order, _ = await journal.record_new_order(order, intent.signal_id)  # the journaled row is sent
            j_new = clock() - j0
        placed = await exchange.submit(order)
        if journal is not None:
            j1 = clock()
            await journal.update_order(coid, placed.status, broker_order_id=placed.broker_order_id,
                                       reject_reason=placed.reject_reason)
            out.journal.append(j_new + clock() - j1)
        book.placed(placed)
        out.sent += 1
        out.total.append(clock() - t0)
    out.seconds = time.perf_counter() - started
    return out


def run_floor(wire: list[dict[str, str]]) -> Run:
    """Baseline of the path: decode + client_order_id, nothing else."""
    clock = time.perf_counter_ns
    out = Run()
    started = time.perf_counter()
    for fields in wire:
        t0 = clock()
        intent = bus_mod.decode_intent(fields)
        client_order_id(SESSION_UID, intent.signal_id)
        out.total.append(clock() - t0)
    out.seconds = time.perf_counter() - started
    return out


def call_floor(n: int) -> dict[str, float]:
    """Baseline of the checks: an empty call with the checks' arguments, timed like benchmarks/pretrade.py."""
    def empty(*_: object) -> None:
        return None

    row = ("S001", 1, 10.0, None, 100.0, 0.0, 0, TradingState.ACTIVE)
    clock = time.perf_counter_ns
    samples = [0] * n
    gc.disable()
    try:
        for i in range(n):
            t0 = clock()
            empty(*row)
            samples[i] = clock() - t0
    finally:
        gc.enable()
    us = [s / 1000 for s in samples]
    return {"p50_us": pct(us, 50), "p99_us": pct(us, 99)}


async def select_one(journal: Journal, n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        async with journal.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return {"p50_us": pct(samples, 50), "p99_us": pct(samples, 99)}


def pretrade_checks(n: int, workdir: pathlib.Path) -> dict[str, Any]:
    """benchmarks/pretrade.py as it is, in its own process; its JSON figures."""
    out = workdir / "pretrade.json"
    subprocess.run([sys.executable, "-m", "benchmarks.pretrade", "--n", str(n), "--json", str(out)], check=True,
                   stdout=subprocess.DEVNULL, cwd=pathlib.Path(__file__).resolve().parents[1], timeout=300)
    return dict(json.loads(out.read_text()))


@dataclass
class Report:
    orders: int
    journal_orders: int
    checks: dict[str, Any] = field(default_factory=dict)
    checks_floor: dict[str, float] = field(default_factory=dict)
    floor: dict[str, float] = field(default_factory=dict)
    floor_per_s: float = 0.0
    memory: dict[str, float] = field(default_factory=dict)
    memory_per_s: float = 0.0
    redis: dict[str, float] = field(default_factory=dict)
    redis_per_s: float = 0.0
    full: dict[str, float] = field(default_factory=dict)
    full_per_s: float = 0.0
    journal: dict[str, float] = field(default_factory=dict)
    select1: dict[str, float] = field(default_factory=dict)
    rejected_share: float = 0.0


async def _measure(report: Report, redis_url: str, dsn: str) -> None:
    import redis.asyncio as aioredis

    wire = intents(report.orders)
    run_floor(wire[:2000])  # warm-up: imports, caches
    floor = run_floor(wire)
    report.floor, report.floor_per_s = floor.stats(), floor.per_second
    await run_path(wire[:2000], SimulatedExchange(seed=42), None)
    memory = await run_path(wire, SimulatedExchange(seed=42), None)
    report.memory, report.memory_per_s = memory.stats(), memory.per_second
    report.rejected_share = memory.rejected / max(1, len(memory.total) + memory.rejected)
    client = aioredis.Redis.from_url(redis_url)
    journal = await Journal.open(dsn, "bench/orderpath", max_size=4)
    try:
        sub = wire[:report.journal_orders * 2]
        redis_run = await run_path(sub, SimulatedExchange(seed=42, redis_client=client, key_prefix="bench:r"), None)
        report.redis, report.redis_per_s = redis_run.stats(), redis_run.per_second
        report.select1 = await select_one(journal, 500)
        jw = intents(report.journal_orders + 200, seed=8)
        await run_path(jw[:200], SimulatedExchange(seed=42, redis_client=client, key_prefix="bench:w"), journal)
        full = await run_path(jw[200:], SimulatedExchange(seed=42, redis_client=client, key_prefix="bench:f"),
                              journal)
        report.full, report.full_per_s = full.stats(), full.per_second
        report.journal = full.stats(full.journal)
    finally:
        await journal.close()
        await client.aclose()


def run(orders: int = 20_000, journal_orders: int = 3_000, checks: int = 300_000,
        log: Any = print) -> Report:
    report = Report(orders=orders, journal_orders=journal_orders)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="tp-bench-orderpath-"))
    redis: services.RedisServer | None = None
    postgres: services.PostgresServer | None = None
    try:
        log(f"orderpath: pre-trade checks ({checks} via benchmarks/pretrade.py)")
        report.checks = pretrade_checks(checks, workdir)
        report.checks_floor = call_floor(checks)
        redis = services.RedisServer(services.server_dir("bench-redis")).start()
        postgres = services.PostgresServer(services.server_dir("bench-pg")).init().start()
        log(f"orderpath: {orders} orders in memory, {journal_orders * 2} with the Redis exchange, "
            f"{journal_orders} with the journal")
        asyncio.run(_measure(report, redis.url, postgres.dsn))
    finally:
        for server in (postgres, redis):
            if server is not None:
                server.stop()
                shutil.rmtree(server.workdir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def rows(r: Report, command: str = COMMAND) -> list[dict[str, Any]]:
    floor_label = "decode + client_order_id only, same intents"
    return [
        figure("pre-trade checks, p50", r.checks["p50_us"], "us", r.checks_floor["p50_us"],
               "empty call, same arguments, same timer", "", None, command),
        figure("pre-trade checks, p99", r.checks["p99_us"], "us", r.checks_floor["p99_us"],
               "empty call, same arguments, same timer", f"p99 <= {GOAL_CHECKS_P99_US:g} us",
               r.checks["p99_us"] <= GOAL_CHECKS_P99_US, command),
        figure("order path (no journal, exchange in memory), p50", r.memory["p50_us"], "us", r.floor["p50_us"],
               floor_label, "", None, command),
        figure("order path (no journal, exchange in memory), p99", r.memory["p99_us"], "us", r.floor["p99_us"],
               floor_label, f"p99 <= {GOAL_PATH_P99_US:g} us", r.memory["p99_us"] <= GOAL_PATH_P99_US, command),
        figure("order path (no journal, exchange in memory), orders/s", r.memory_per_s, "orders/s",
               r.floor_per_s, floor_label, "", None, command, higher_is_better=True),
        figure("order path (no journal, exchange persisted to Redis), p99", r.redis["p99_us"], "us",
               r.memory["p99_us"], "same path, exchange in memory", "", None, command),
        figure("journal commit (INSERT new + UPDATE status), p50", r.journal["p50_us"], "us", r.select1["p50_us"],
               "SELECT 1 round trip, same pool", "", None, command),
        figure("journal commit (INSERT new + UPDATE status), p99", r.journal["p99_us"], "us", r.select1["p99_us"],
               "SELECT 1 round trip, same pool", "", None, command),
        figure("full order path (journal + Redis exchange), p50", r.full["p50_us"], "us", r.memory["p50_us"],
               "same path without journal, exchange in memory", "", None, command),
        figure("full order path (journal + Redis exchange), p99", r.full["p99_us"], "us", r.memory["p99_us"],
               "same path without journal, exchange in memory", "", None, command),
        figure("full order path (journal + Redis exchange), orders/s", r.full_per_s, "orders/s", r.memory_per_s,
               "same path without journal, exchange in memory", "", None, command, higher_is_better=True),
    ]


def table(r: Report) -> str:
    def line(label: str, st: dict[str, float], per_s: float | None = None) -> str:
        rate = f"{per_s:>12,.0f}" if per_s else f"{'':>12}"
        return f"{label:<46}{st['p50_us']:>9.1f}{st['p99_us']:>9.1f}{rate}"

    c = r.checks
    return "\n".join([
        f"order path: {r.orders} intents ({r.rejected_share:.1%} rejected by the checks, timed apart), "
        f"{r.journal_orders} with the journal",
        f"{'':<46}{'p50 us':>9}{'p99 us':>9}{'orders/s':>12}",
        f"{'pre-trade checks (benchmarks/pretrade.py)':<46}{c['p50_us']:>9.1f}{c['p99_us']:>9.1f}",
        line("  baseline: empty call", r.checks_floor),
        line("  baseline: decode + client_order_id", r.floor),
        line("path, no journal, exchange in memory", r.memory, r.memory_per_s),
        line("path, no journal, exchange -> Redis", r.redis, r.redis_per_s),
        line("journal commit (INSERT + UPDATE)", r.journal),
        line("  baseline: SELECT 1", r.select1),
        line("full path: journal + exchange -> Redis", r.full, r.full_per_s),
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.orderpath", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000, help="orders through the in-memory path")
    parser.add_argument("--journal-orders", type=int, default=3_000, help="orders through the journal")
    parser.add_argument("--checks", type=int, default=300_000, help="checks timed by benchmarks/pretrade.py")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    report = run(args.orders, args.journal_orders, args.checks)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"report": vars(report), "figures": rows(report)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
