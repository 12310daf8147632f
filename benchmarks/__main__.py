"""``make bench``: every benchmark, one table, one JSON file.

The four figures of issue 8, the backup's (issue 17) and the real node's (issue 19), each beside a baseline
measured in the same run
(this machine is shared: ratios to a same-run baseline survive noise that
absolute numbers do not):

=========  ==========================================================  =============================
name       what                                                         module
=========  ==========================================================  =============================
halt       halt patch -> executors refuse orders / phase Halted          ``benchmarks.halt``
scale      1,000 sessions: time to reconciled, peak RSS, CPU at rest     ``benchmarks.scale``
orderpath  intent -> checks -> journal -> simulated exchange             ``benchmarks.orderpath``
inference  default model on CPU: predictions/s, batch p99                ``benchmarks.inference``
backup     journal backup throughput, ratio to plain pg_dump (same run)   ``benchmarks.backup``
node       the real node: halt -> executor pod refuses; session start     ``benchmarks.node``
=========  ==========================================================  =============================

``controlplane`` (warm start of the local control plane) can be named too; it
is not one of the four and does not run by default.

Run::

    make bench                                   # all six: ~13 min, plus ~5 min for node (as root)
    make bench BENCH_ARGS=--quick                # all six, smaller and shorter: ~6 min, plus ~4 min for node
    .venv/bin/python -m benchmarks halt          # one (or several: halt scale)
    .venv/bin/python -m benchmarks --list

Each benchmark starts and stops its own servers, is bounded in time, and is
not part of the test suite. Results: a table on stdout and
``benchmarks/results/results.json`` (figure, value, unit, baseline, ratio,
command); running a subset replaces only that subset's figures in the file.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import common

ALL = ("orderpath", "inference", "halt", "scale", "backup", "node")
EXTRA = ("controlplane",)
PY = ".venv/bin/python -m benchmarks"


def _command(name: str, quick: bool) -> str:
    return f"{PY} {name}" + (" --quick" if quick else "")


def bench_halt(quick: bool) -> list[dict[str, Any]]:
    from benchmarks import halt

    report = halt.run(sessions=3 if quick else 5, halts=50, timeout=300 if quick else 420)
    print(halt.table(report))
    return halt.rows(report, _command("halt", quick))


def bench_scale(quick: bool) -> list[dict[str, Any]]:
    from benchmarks import scale

    report = scale.run(sessions=250 if quick else 1000, idle=10 if quick else 30, timeout=240)
    print(scale.table(report))
    return scale.rows(report, _command("scale", quick))


def bench_orderpath(quick: bool) -> list[dict[str, Any]]:
    from benchmarks import orderpath

    report = (orderpath.run(orders=5_000, journal_orders=1_000, checks=100_000) if quick
              else orderpath.run())
    print(orderpath.table(report))
    return orderpath.rows(report, _command("orderpath", quick))


def bench_inference(quick: bool) -> list[dict[str, Any]]:
    from benchmarks import inference

    report = inference.run(seconds=0.8 if quick else 2.5)
    print(inference.table(report))
    rows = inference.rows(report)
    for row in rows:  # its own entry point is the reproducible command; say how make bench ran it
        row["command"] = _command("inference", quick) if quick else row["command"]
    return rows


def bench_backup(quick: bool) -> list[dict[str, Any]]:
    import asyncio

    from benchmarks import backup

    orders, rounds = (50_000, 3) if quick else (200_000, 5)
    result = asyncio.run(backup.bench(orders, rounds))
    print(f"backup: journal {result['database_bytes'] / 1e6:.1f} MB ({orders} orders), {rounds} alternating rounds; "
          f"pg_dump {result['pg_dump_mb_s']} MB/s, backup {result['backup_mb_s']} MB/s, ratio {result['ratio']:.2f}")
    return backup.rows(result, f".venv/bin/python -m benchmarks.backup --orders {orders} --rounds {rounds}")


def bench_node(quick: bool) -> list[dict[str, Any]]:
    from benchmarks import node

    report = node.run(halts=10 if quick else 20, rounds=1 if quick else 5)
    print(node.table(report))
    return node.rows(report, _command("node", quick))


def bench_controlplane(quick: bool) -> list[dict[str, Any]]:
    from benchmarks import controlplane_startup

    return controlplane_startup.rows(controlplane_startup.run(2 if quick else 3), _command("controlplane", quick))


BENCHES: dict[str, Callable[[bool], list[dict[str, Any]]]] = {
    "halt": bench_halt, "scale": bench_scale, "orderpath": bench_orderpath, "inference": bench_inference,
    "backup": bench_backup, "node": bench_node, "controlplane": bench_controlplane,
}


def merge(path: pathlib.Path, fresh: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The figures already in ``path`` for benchmarks that did not run, then this run's, in ALL order."""
    kept: list[dict[str, Any]] = []
    if path.exists():
        try:
            kept = [f for f in json.loads(path.read_text()).get("figures", []) if f.get("benchmark") not in fresh]
        except (OSError, ValueError):
            kept = []
    order = {name: i for i, name in enumerate((*ALL, *EXTRA))}
    rows = kept + [dict(r, benchmark=name) for name, rs in fresh.items() for r in rs]
    return sorted(rows, key=lambda r: order.get(r.get("benchmark", ""), 99))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: {' '.join(ALL)})")
    parser.add_argument("--quick", action="store_true", help="smaller and shorter runs (a smoke test of the numbers)")
    parser.add_argument("--json", type=pathlib.Path, default=common.RESULTS / "results.json")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{n}{'' if n in ALL else '  (not run by default)'}" for n in (*ALL, *EXTRA)))
        return 0
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    names = [n for n in (*ALL, *EXTRA) if n in args.names] if args.names else list(ALL)
    common.stop_on_sigterm()
    fresh: dict[str, list[dict[str, Any]]] = {}
    failed: list[str] = []
    started = time.monotonic()
    print(f"benchmarks: {' '.join(names)}{' (quick)' if args.quick else ''}; machine: {common.machine()}",
          flush=True)
    for name in names:
        print(f"\n=== {name}", flush=True)
        t0 = time.monotonic()
        try:
            fresh[name] = BENCHES[name](args.quick)
        except KeyboardInterrupt:
            print(f"\n{name}: interrupted; servers stopped", file=sys.stderr)
            return 130
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"=== {name}: {time.monotonic() - t0:.0f}s", flush=True)
    rows = [dict(r, benchmark=n) for n, rs in fresh.items() for r in rs]
    print(f"\nresults ({time.monotonic() - started:.0f}s{', quick' if args.quick else ''}):\n")
    print(common.table(rows))
    if fresh:
        common.write_results(merge(args.json, fresh), args.json, {"quick": args.quick, "ran": list(fresh)})
        print(f"\nwrote {args.json}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
