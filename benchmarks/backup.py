"""Backup throughput of the journal, as a ratio to plain ``pg_dump`` of the same database, in the same run.

What is compared, on one throw-away PostgreSQL server and one journal
database (the journal's own migrations, filled with ``--orders`` orders and
proportionate fills, positions, P&L snapshots, risk events):

* **pg_dump** — ``pg_dump --format=custom --file=...``: what an operator
  would run by hand; the baseline;
* **backup** — what ``trading-platform backup run`` does for the journal
  target: ``pg_dump`` inside an exported ``REPEATABLE READ`` snapshot while
  the same transaction counts and checksums every table, then the sha256 of
  the dump and the manifest (``trading_workers.backup.postgres.dump`` and
  ``manifest``);
* **verify** — the scratch restore and table-by-table comparison that
  ``spec.verify`` adds (reported on its own: it is a restore, not a backup).

Throughput is the database's size (``pg_database_size``) over the wall time;
the ratio is backup throughput / pg_dump throughput (1.0 = as fast as
pg_dump alone). Runs alternate (pg_dump, backup, pg_dump, ...) and the
medians are compared, so drift on a shared machine hits both alike.

Run::

    .venv/bin/python -m benchmarks.backup                       # ~1-2 min: 200k orders, 5 rounds
    .venv/bin/python -m benchmarks.backup --orders 50000 --rounds 3 --json benchmarks/results/backup.json
    .venv/bin/python -m benchmarks.backup --rounds 7 --compare-legacy --probe-checksums   # before/after, CPU
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import pathlib
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import asyncpg

from trading_dev.services import PostgresServer, server_dir
from trading_workers.backup import manifest as mf
from trading_workers.backup import postgres as pg
from trading_workers.journal import migrate

SEED = """
INSERT INTO orders (client_order_id, session, signal_id, symbol, side, qty, order_type, limit_price, status,
                    filled_qty, avg_fill_price, broker_order_id, created_at, updated_at)
SELECT 'o-' || i, 'bench/s', 'sig-' || i, (ARRAY['AAPL','MSFT','NVDA','AMZN','GOOG'])[1 + i % 5],
       CASE WHEN i % 3 = 0 THEN 'sell' ELSE 'buy' END, 1 + i % 7, CASE WHEN i % 2 = 0 THEN 'limit' ELSE 'market' END,
       CASE WHEN i % 2 = 0 THEN 100 + (i % 50) * 0.25 END,
       (ARRAY['filled','canceled','accepted','filled'])[1 + i % 4], CASE WHEN i % 4 IN (0, 3) THEN 1 + i % 7 ELSE 0 END,
       CASE WHEN i % 4 IN (0, 3) THEN 100 + (i % 40) * 0.5 ELSE 0 END, 'b-' || i,
       now() - (i || ' seconds')::interval, now()
FROM generate_series(1, $1) AS i;
INSERT INTO fills (fill_id, client_order_id, session, symbol, side, qty, price, ts)
SELECT 'f-' || i, 'o-' || i, 'bench/s', (ARRAY['AAPL','MSFT','NVDA','AMZN','GOOG'])[1 + i % 5],
       CASE WHEN i % 3 = 0 THEN 'sell' ELSE 'buy' END, 1 + i % 7, 100 + (i % 40) * 0.5, now() - (i || ' seconds')::interval
FROM generate_series(1, $1) AS i WHERE i % 4 IN (0, 3);
INSERT INTO positions (session, symbol, qty, avg_price, realized_pnl)
SELECT 'bench/s', s, 100, 101.5, 12.25 FROM unnest(ARRAY['AAPL','MSFT','NVDA','AMZN','GOOG']) AS s;
INSERT INTO pnl_snapshots (session, at, equity, realized_pnl, unrealized_pnl, daily_pnl_pct, drawdown_pct, exposure)
SELECT 'bench/s', now() - (i || ' seconds')::interval, 1e6 + i, i * 0.1, -i * 0.01, 0.001 * i, 0.0001 * i, 5e5
FROM generate_series(1, $1 / 4) AS i;
INSERT INTO risk_events (session, rule, action, value, threshold, message)
SELECT 'bench/s', 'dailyLoss', 'Alert', i, 2, 'event ' || i FROM generate_series(1, $1 / 100) AS i;
"""


async def seed(dsn: str, orders: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        for statement in [s for s in SEED.split(";\n") if s.strip()]:
            await conn.execute(statement.replace("$1", str(int(orders))))
        await conn.execute("VACUUM ANALYZE")
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


def plain_pg_dump(dsn: str, out: pathlib.Path) -> list[str]:
    return [pg.pg_bin("pg_dump"), "--format=custom", "--no-password", f"--file={out}", f"--dbname={dsn}"]


def time_pg_dump(dsn: str, work: pathlib.Path) -> tuple[float, int]:
    out = work / "plain.dump"
    started = time.perf_counter()
    subprocess.run(plain_pg_dump(dsn, out), check=True, capture_output=True)
    seconds = time.perf_counter() - started
    size = out.stat().st_size
    out.unlink()
    return seconds, size


async def time_backup(dsn: str, work: pathlib.Path) -> tuple[float, int]:
    run_dir = work / "run"
    started = time.perf_counter()
    details = await pg.dump(dsn, run_dir / pg.DUMP_NAME)
    now = dt.datetime.now(dt.UTC)
    man = mf.Manifest(backup="bench/b", session="bench/s", run="bench", started_at=now, completed_at=now,
                      status="Completed", targets=["journal"], details={"journal": details},
                      artifacts=[mf.Artifact.of(run_dir, run_dir / pg.DUMP_NAME, "journal")])
    mf.write(run_dir, man)
    seconds = time.perf_counter() - started
    size = (run_dir / pg.DUMP_NAME).stat().st_size
    shutil.rmtree(run_dir)
    return seconds, size


async def time_verify(dsn: str, work: pathlib.Path) -> float:
    run_dir = work / "verify"
    details = await pg.dump(dsn, run_dir / pg.DUMP_NAME)
    started = time.perf_counter()
    problems = await pg.verify(run_dir / pg.DUMP_NAME, dsn, details["tables"], details["checksum"])
    seconds = time.perf_counter() - started
    assert not problems, problems
    shutil.rmtree(run_dir)
    return seconds


PROBES = {
    "md5-text (before): md5(t::text), md5 of the sorted hex":
        "SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h), '')) "
        "FROM (SELECT md5(t::text) AS h FROM public.{t} t) s",
    "the row as text only": "SELECT count(*), sum(length(t::text)) FROM public.{t} t",
    "the row's binary form only (record_send)": "SELECT count(*), sum(length(record_send(t))) FROM public.{t} t",
    "sha256-binary (now): sha256(record_send(t)), sorted as bytes":
        "SELECT count(*), sha256(coalesce(string_agg(h, '' ORDER BY h), '')) "
        "FROM (SELECT sha256(record_send(t)) AS h FROM public.{t} t) s",
}


async def probe_checksums(dsn: str, repeats: int = 3) -> dict[str, float]:
    """Backend CPU seconds (min of ``repeats``) of each way of checksumming every table: load-independent."""
    import psutil

    conn = await pg.connect(dsn)
    try:
        backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
        names = await pg.tables(conn)
        out: dict[str, float] = {}
        for label, query in PROBES.items():
            spent = []
            for _ in range(repeats):
                before = sum(backend.cpu_times()[:2])
                for table in names:
                    await conn.fetchrow(query.format(t=pg.ident(table)))
                spent.append(sum(backend.cpu_times()[:2]) - before)
            out[label] = round(min(spent), 3)
        return out
    finally:
        await conn.close()


async def bench(orders: int, rounds: int, compare_legacy: bool = False, probe: bool = False) -> dict[str, Any]:
    workdir = server_dir("bench-pg")
    server = PostgresServer(workdir).init().start()
    work = pathlib.Path(tempfile.mkdtemp(prefix="tp-bench-backup-"))
    try:
        admin = await asyncpg.connect(server.dsn)
        await admin.execute('CREATE DATABASE "journal"')
        await admin.close()
        dsn = pg.with_database(server.dsn, "journal")
        db_bytes = await seed(dsn, orders)
        time_pg_dump(dsn, work)  # warm the cache for both
        plain: list[float] = []
        ours: list[float] = []
        legacy: list[float] = []
        sizes: dict[str, int] = {}
        for _ in range(rounds):
            seconds, sizes["pg_dump"] = time_pg_dump(dsn, work)
            plain.append(seconds)
            seconds, sizes["backup"] = await time_backup(dsn, work)
            ours.append(seconds)
            if compare_legacy:   # the same backup with the checksum method of runs taken before (md5-text)
                current = pg.digest
                pg.digest = functools.partial(current, method=pg.CHECKSUM_LEGACY)  # type: ignore[assignment]
                try:
                    legacy.append((await time_backup(dsn, work))[0])
                finally:
                    pg.digest = current  # type: ignore[assignment]
        verify = await time_verify(dsn, work)
        probes = await probe_checksums(dsn) if probe else {}
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    p, o = statistics.median(plain), statistics.median(ours)
    return {
        "orders": orders, "rounds": rounds, "database_bytes": db_bytes, "dump_bytes": sizes,
        "pg_dump_seconds": plain, "backup_seconds": ours, "verify_seconds": round(verify, 3),
        "pg_dump_median_s": round(p, 3), "backup_median_s": round(o, 3),
        "pg_dump_mb_s": round(db_bytes / p / 1e6, 1), "backup_mb_s": round(db_bytes / o / 1e6, 1),
        "ratio": round(p / o, 3),
        **({"legacy_seconds": legacy, "legacy_median_s": round(statistics.median(legacy), 3),
            "legacy_ratio": round(p / statistics.median(legacy), 3)} if legacy else {}),
        **({"checksum_backend_cpu_s": probes} if probes else {}),
        "load_average": list(os.getloadavg()),
        "pg_dump_command": " ".join(shlex.quote(a) for a in plain_pg_dump("postgresql://.../journal",
                                                                          pathlib.Path("plain.dump"))),
        "python": platform.python_version(), "machine": platform.machine(),
    }


GOAL_RATIO = 0.8


def rows(result: dict[str, Any], command: str) -> list[dict[str, Any]]:
    """Figures in the shape ``make bench`` collects: the backup's throughput beside plain pg_dump's, same run."""
    ratio = result["ratio"]
    miss = {} if ratio >= GOAL_RATIO else {
        "by": f"{GOAL_RATIO - ratio:.2f} under (ratio {ratio:.2f}, load average {result['load_average'][0]:.1f})",
        "why": "every row is hashed in the dump's snapshot while pg_dump runs: about as much server CPU as "
               "pg_dump itself, so with both cores busy the two compete (docs/benchmarks.md, section 5)"}
    return [{"figure": "backup throughput, journal (snapshot + pg_dump + row checksums + sha256)",
             "value": result["backup_mb_s"], "unit": "MB/s", "baseline": result["pg_dump_mb_s"],
             "baseline_label": "plain pg_dump --format=custom of the same database, alternating rounds",
             "ratio": ratio, "goal": f"ratio >= {GOAL_RATIO}", "meets_goal": ratio >= GOAL_RATIO,
             "command": command, **miss},
            {"figure": "backup verify (scratch restore + compare), on top", "value": result["verify_seconds"],
             "unit": "s", "baseline": result["backup_median_s"], "baseline_label": "the backup itself",
             "ratio": result["verify_seconds"] / result["backup_median_s"], "command": command}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    parser.add_argument("--compare-legacy", action="store_true",
                        help="also time the backup with the md5-text checksums of older runs, in the same rounds")
    parser.add_argument("--probe-checksums", action="store_true",
                        help="also print the backend CPU of each way of checksumming the tables (load-independent)")
    args = parser.parse_args()
    result = asyncio.run(bench(args.orders, args.rounds, args.compare_legacy, args.probe_checksums))
    print(f"journal database: {result['database_bytes'] / 1e6:.1f} MB ({args.orders} orders); "
          f"dump {result['dump_bytes']['backup'] / 1e6:.1f} MB")
    print(f"pg_dump alone : median {result['pg_dump_median_s']:.3f} s = {result['pg_dump_mb_s']} MB/s   "
          f"[{result['pg_dump_command']}]")
    print(f"backup journal: median {result['backup_median_s']:.3f} s = {result['backup_mb_s']} MB/s   "
          "[snapshot + pg_dump --snapshot + per-table checksums + sha256 + manifest]")
    print(f"ratio backup/pg_dump throughput: {result['ratio']:.2f}  (1.00 = as fast as pg_dump alone; "
          f"{args.rounds} alternating rounds)")
    if "legacy_ratio" in result:
        print(f"backup with md5-text checksums (before): median {result['legacy_median_s']:.3f} s, "
              f"ratio {result['legacy_ratio']:.2f}")
    for label, cpu in result.get("checksum_backend_cpu_s", {}).items():
        print(f"checksum probe, backend CPU {cpu:.3f} s: {label}")
    print(f"verify (scratch restore + compare), on top: {result['verify_seconds']:.3f} s; "
          f"load average {result['load_average'][0]:.2f}")
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, '-m', 'benchmarks.backup', *sys.argv[1:]])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
