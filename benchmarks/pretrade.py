"""Latency of one pre-trade check run (issue 4): target p99 <= 20 us.

What is timed is exactly what the executor calls per order intent,
``PreTradeChecks.check`` with its metrics on: trading state, reduce-only,
restricted symbols, validity, reference price, price collar, order
notional, position limit, open orders, duplicate window and the order-rate
bucket, plus the prometheus counter of the outcome. Inputs are drawn up
front (500 symbols, market and limit orders, long and short positions,
a share of them rejected by the collar, notional,
position, open-orders and restricted-symbol checks; the share is printed) so only the check is on
the clock; every call is timed on its own with ``perf_counter_ns``.

Run::

    .venv/bin/python -m benchmarks.pretrade              # ~5 s; p50/p99 on stdout
    .venv/bin/python -m benchmarks.pretrade --n 500000 --json benchmarks/results/pretrade.json
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import pathlib
import platform
import random
import statistics
import time
from collections.abc import Callable

from trading_workers.pretrade import CheckLimits, PreTradeChecks, TradingState


def inputs(n: int, seed: int = 1) -> list[tuple[str, int, float, float | None, float, float, int, TradingState]]:
    rng = random.Random(seed)
    symbols = [f"S{i:03d}" for i in range(500)] + ["GME"]
    prices = {s: rng.uniform(10, 500) for s in symbols}
    out = []
    for _ in range(n):
        symbol = rng.choice(symbols)
        last = prices[symbol]
        limit = None if rng.random() < 0.5 else last * rng.uniform(0.93, 1.07)  # some outside the 5 % collar
        out.append((symbol, rng.choice((1, -1)), float(rng.randint(1, 100)), limit, last,
                    float(rng.randint(-300, 300)), rng.randint(0, 205), TradingState.ACTIVE))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300_000, help="checks to time")
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = parser.parse_args()
    limits = CheckLimits(max_order_notional=100_000, max_position_notional=250_000,
                         max_orders_per_second=1e9, price_collar_pct=5, duplicate_window_seconds=1,
                         max_open_orders=200, restricted_symbols=frozenset({"GME"}))
    # The session clock advances 1 ms per order (1,000 orders/s, far above any policy's rate), so the
    # duplicate window holds a realistic number of recent orders; the check reads it like time.monotonic.
    now = [0.0]
    data = inputs(args.n)
    checks = PreTradeChecks(limits, clock=lambda: now[0])
    for row in data[:20_000]:  # warm-up
        now[0] += 0.001
        checks.check(*row)
    checks = PreTradeChecks(limits, clock=lambda: now[0])
    samples = [0] * len(data)
    reasons: collections.Counter[str] = collections.Counter()
    clock = time.perf_counter_ns
    check = checks.check
    gc.disable()
    try:
        for i, row in enumerate(data):
            now[0] += 0.001
            t0 = clock()
            reason = check(*row)
            samples[i] = clock() - t0
            reasons[reason.value if reason else "passed"] += 1
    finally:
        gc.enable()
    rejected = len(data) - reasons["passed"]
    overhead = min(_timer_overhead(clock) for _ in range(5))
    samples.sort()

    def pct(q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))] / 1000

    result = {
        "checks": len(samples), "rejected_share": round(rejected / len(samples), 3),
        "p50_us": round(pct(0.50), 2), "p99_us": round(pct(0.99), 2), "p999_us": round(pct(0.999), 2),
        "max_us": round(samples[-1] / 1000, 2), "mean_us": round(statistics.fmean(samples) / 1000, 2),
        "timer_overhead_us": round(overhead / 1000, 3), "python": platform.python_version(),
        "machine": platform.machine(), "target_p99_us": 20.0, "outcomes": dict(reasons.most_common()),
    }
    print(f"pre-trade check: p50 {result['p50_us']} us, p99 {result['p99_us']} us, p99.9 {result['p999_us']} us, "
          f"max {result['max_us']} us over {result['checks']} checks ({result['rejected_share']:.0%} rejected; "
          f"timer overhead {result['timer_overhead_us']} us included)")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _timer_overhead(clock: Callable[[], int]) -> int:
    best = 10**9
    for _ in range(1000):
        t0 = clock()
        best = min(best, clock() - t0)
    return best


if __name__ == "__main__":
    main()
