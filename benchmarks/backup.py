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
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
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
    problems = await pg.verify(run_dir / pg.DUMP_NAME, dsn, details["tables"])
    seconds = time.perf_counter() - started
    assert not problems, problems
    shutil.rmtree(run_dir)
    return seconds


async def bench(orders: int, rounds: int) -> dict[str, Any]:
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
        sizes: dict[str, int] = {}
        for _ in range(rounds):
            seconds, sizes["pg_dump"] = time_pg_dump(dsn, work)
            plain.append(seconds)
            seconds, sizes["backup"] = await time_backup(dsn, work)
            ours.append(seconds)
        verify = await time_verify(dsn, work)
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
        "pg_dump_command": " ".join(shlex.quote(a) for a in plain_pg_dump("postgresql://.../journal",
                                                                          pathlib.Path("plain.dump"))),
        "python": platform.python_version(), "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = parser.parse_args()
    result = asyncio.run(bench(args.orders, args.rounds))
    print(f"journal database: {result['database_bytes'] / 1e6:.1f} MB ({args.orders} orders); "
          f"dump {result['dump_bytes']['backup'] / 1e6:.1f} MB")
    print(f"pg_dump alone : median {result['pg_dump_median_s']:.3f} s = {result['pg_dump_mb_s']} MB/s   "
          f"[{result['pg_dump_command']}]")
    print(f"backup journal: median {result['backup_median_s']:.3f} s = {result['backup_mb_s']} MB/s   "
          "[snapshot + pg_dump --snapshot + per-table checksums + sha256 + manifest]")
    print(f"ratio backup/pg_dump throughput: {result['ratio']:.2f}  (1.00 = as fast as pg_dump alone; "
          f"{args.rounds} alternating rounds)")
    print(f"verify (scratch restore + compare), on top: {result['verify_seconds']:.3f} s")
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, '-m', 'benchmarks.backup', *sys.argv[1:]])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
