"""``trading-platform backup run|verify|restore`` against real PostgreSQL, Redis and the real API server."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pathlib
import subprocess
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
import yaml

from tests.backup.conftest import Cluster, journal_state, seed_journal
from tests.fixtures.servers import RedisServer
from trading_workers.backup import manifest as mf
from trading_workers.backup.files import resolve_model
from trading_workers.bus import session_prefix
from trading_workers.journal import Journal, PnlSnapshot

pytestmark = [pytest.mark.cluster, pytest.mark.services]

Cli = Callable[..., subprocess.CompletedProcess[str]]


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    return proc


def run_dirs(cli: Cli, backup: str) -> list[pathlib.Path]:
    root: pathlib.Path = cli.destination / backup  # type: ignore[attr-defined]
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def seed_redis(url: str, session_key: str, n: int = 200) -> None:
    prefix = session_prefix(*session_key.split("/"))
    client = aioredis.Redis.from_url(url)
    try:
        for i in range(n):
            await client.xadd(f"{prefix}:md", {"symbol": "AAPL", "price": str(100 + i)})
        await client.hset(f"{prefix}:exchange", mapping={"cash": "1000000", "seq": str(n)})
        await client.set(f"{prefix}:lease", "x", px=3_600_000)
        await client.set("tp:{other/session}:keep", "other")
    finally:
        await client.aclose()


async def redis_state(url: str, session_key: str) -> dict[bytes, Any]:
    prefix = session_prefix(*session_key.split("/"))
    client = aioredis.Redis.from_url(url)
    try:
        out: dict[bytes, Any] = {}
        async for key in client.scan_iter(match=prefix + "*"):
            kind = await client.type(key)
            if kind == b"stream":
                out[key] = list(await client.xrange(key) or [])
            elif kind == b"hash":
                out[key] = await client.hgetall(key)
            else:
                out[key] = await client.get(key)
        return out
    finally:
        await client.aclose()


# ------------------------------------------------------------------ back up, verify, manifest

async def test_backup_of_thousands_of_orders_verifies_and_the_manifest_matches_the_files(
        cluster: Cluster, backup_cli: Cli, journal_db: str, redis_server: RedisServer) -> None:
    session = cluster.session()
    await seed_journal(journal_db, session, orders=3000)
    await seed_redis(redis_server.url, session)
    cluster.backup("nightly")

    proc = ok(backup_cli("run", "--backup", f"{cluster.namespace}/nightly"))
    assert "run ok" in proc.stdout
    logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    progress = [entry["msg"] for entry in logs]
    for step in ("backup started", "journal snapshot taken; dumping", "journal dumped", "manifest written",
                 "journal verified by a scratch restore", "backup finished"):
        assert step in progress, progress

    [run_dir] = run_dirs(backup_cli, "nightly")
    manifest = json.loads((run_dir / mf.MANIFEST).read_text())
    assert manifest["status"] == "Completed" and manifest["run"] == run_dir.name
    # Every artifact's size and sha256, computed here independently, match the manifest.
    assert {a["target"] for a in manifest["artifacts"]} == {"journal", "redis", "models", "resources"}
    for art in manifest["artifacts"]:
        path = run_dir / art["path"]
        assert path.stat().st_size == art["size"] and sha256(path) == art["sha256"], art["path"]
    manifest_sha = sha256(run_dir / mf.MANIFEST)
    assert (run_dir / mf.MANIFEST_SUM).read_text() == f"{manifest_sha}  {mf.MANIFEST}\n"
    assert manifest["sizeBytes"] == sum(a["size"] for a in manifest["artifacts"])

    # The journal's snapshot numbers are the database's.
    tables = manifest["details"]["journal"]["tables"]
    assert tables["orders"]["rows"] == 3000
    assert tables == await journal_state(journal_db)
    # Redis: an RDB file and the session's keys; models: the shipped default; resources: the YAML in the API.
    assert (run_dir / "redis/dump.rdb").read_bytes()[:5] == b"REDIS"
    assert manifest["details"]["redis"]["keys"] == 3
    assert sha256(run_dir / "models/default.pt") == sha256(resolve_model("builtin://default"))
    ts = yaml.safe_load((run_dir / "resources/tradingsession-s.yaml").read_text())
    assert ts["kind"] == "TradingSession" and ts["status"]["phase"] == "MarketOpen"
    assert "managedFields" not in ts["metadata"]
    assert yaml.safe_load((run_dir / "resources/riskpolicy-limits.yaml").read_text())["kind"] == "RiskPolicy"

    status = cluster.status("nightly")
    assert status["phase"] == "Completed" and status["verified"] is True
    assert status["sha256"] == manifest_sha and status["sizeBytes"] == manifest["sizeBytes"]
    assert status["location"] == f"pvc://backups/nightly/{run_dir.name}"
    assert status["durationSeconds"] > 0 and status["lastSuccessfulTime"] and status["lastVerifiedTime"]
    [entry] = status["history"]
    assert entry["id"] == run_dir.name and entry["phase"] == "Completed" and entry["verified"] is True
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Succeeded"]["status"] == "True" and conds["Verified"]["status"] == "True"
    assert {"BackupStarted", "BackupCompleted"} <= set(cluster.events("nightly"))


async def test_the_backup_keeps_what_retention_removed_and_then_releases_it(
        cluster: Cluster, backup_cli: Cli, journal_db: str) -> None:
    """Retention archives P&L snapshots; a journal run dumps the archive, verifies, then releases it."""
    session = cluster.session()
    await seed_journal(journal_db, session, orders=50)
    journal = await Journal.open(journal_db, session)
    try:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
        for minute in range(6):
            await journal.record_pnl(PnlSnapshot(1e6 + minute, 0, 0, 0.0, 0.0, 0, at=old + dt.timedelta(minutes=minute)))
        assert await journal.retain_snapshots(downsample_before=None, bucket_seconds=300,
                                              delete_before=old + dt.timedelta(days=1)) == (0, 6)
        async with journal.pool.acquire() as conn:   # archived an hour ago (beyond the release margin)
            await conn.execute("UPDATE pnl_snapshots_archive SET archived_at = now() - interval '1 hour'")
        archived = await journal.archived_snapshots()
    finally:
        await journal.close()
    assert len(archived) == 6
    cluster.backup("b", targets=["journal"])

    proc = ok(backup_cli("run", "--backup", f"{cluster.namespace}/b"))
    [run_dir] = run_dirs(backup_cli, "b")
    manifest = json.loads((run_dir / mf.MANIFEST).read_text())
    assert manifest["details"]["journal"]["tables"]["pnl_snapshots_archive"]["rows"] == 6   # the dump holds them
    assert cluster.status("b")["verified"] is True
    assert "archived snapshots released" in proc.stderr
    journal = await Journal.open(journal_db, session)
    try:
        assert await journal.archived_snapshots() == []   # released from the journal: the run keeps them
    finally:
        await journal.close()


@pytest.mark.parametrize("artifact", ["journal/journal.dump", "models/default.pt", "resources/tradingsession-s.yaml"])
async def test_a_flipped_byte_fails_verification_and_the_status_names_the_artifact(
        cluster: Cluster, backup_cli: Cli, journal_db: str, artifact: str) -> None:
    session = cluster.session()
    await seed_journal(journal_db, session, orders=300)
    cluster.backup("b", targets=["journal", "models", "resources"])
    ok(backup_cli("run", "--backup", f"{cluster.namespace}/b"))
    [run_dir] = run_dirs(backup_cli, "b")
    ok(backup_cli("verify", "--backup", f"{cluster.namespace}/b"))  # intact: passes

    path = run_dir / artifact
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    proc = backup_cli("verify", "--backup", f"{cluster.namespace}/b", "--run", run_dir.name)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"FAILED: run {run_dir.name}" in proc.stdout and artifact in proc.stdout
    status = cluster.status("b")
    assert status["verified"] is False and status["phase"] == "Failed"
    assert artifact in status["history"][-1]["message"] and "sha256" in status["history"][-1]["message"]
    verified = next(c for c in status["conditions"] if c["type"] == "Verified")
    assert verified["status"] == "False" and artifact in verified["message"]
    assert "VerificationFailed" in cluster.events("b")
    # A corrupted run is never restored from.
    cluster.patch("tradingsessions", "s", {"spec": {"suspend": True}})
    refused = backup_cli("restore", "--backup", f"{cluster.namespace}/b", "--run", run_dir.name,
                         "--session", session)
    assert refused.returncode == 3 and artifact in refused.stderr


async def test_a_dump_that_does_not_restore_to_the_snapshot_fails_verification(
        cluster: Cluster, backup_cli: Cli, journal_db: str) -> None:
    """Consistent sha256s are not enough: the scratch restore must reproduce the snapshot's rows."""
    session = cluster.session()
    await seed_journal(journal_db, session, orders=200)
    cluster.backup("b", targets=["journal"], verify=False)
    ok(backup_cli("run", "--backup", f"{cluster.namespace}/b"))
    [run_dir] = run_dirs(backup_cli, "b")
    # Tamper with the recorded snapshot (and re-seal the manifest, as a buggy dumper would have written it).
    man = mf.read(run_dir)
    man.details["journal"]["tables"]["fills"]["rows"] += 1
    mf.write(run_dir, man)
    proc = backup_cli("verify", "--backup", f"{cluster.namespace}/b", "--run", run_dir.name)
    assert proc.returncode == 1
    message = cluster.status("b")["history"][-1]["message"]
    assert "journal/journal.dump: fills rows" in message, message


# ------------------------------------------------------------------ restore

async def test_lose_journal_rows_and_redis_keys_then_restore_gives_the_identical_journal(
        cluster: Cluster, backup_cli: Cli, journal_db: str, redis_server: RedisServer) -> None:
    session = cluster.session(phases=("Initializing", "PreMarket", "MarketOpen", "Halted"))
    other = f"{cluster.namespace}/other"
    await seed_journal(journal_db, session, orders=2000)
    await seed_journal(journal_db, other, orders=100, prefix="x")
    await seed_redis(redis_server.url, session)
    before = await journal_state(journal_db, session)
    whole_before = await journal_state(journal_db)
    redis_before = await redis_state(redis_server.url, session)
    cluster.backup("b", targets=["journal", "redis"], verify=False)
    ok(backup_cli("run", "--backup", f"{cluster.namespace}/b"))

    # Lose data: orders, every fill, positions; a Redis stream; and, in another session, write new rows.
    conn = await asyncpg.connect(journal_db)
    try:
        await conn.execute("DELETE FROM orders WHERE session = $1 AND client_order_id > 'o-000999'", session)
        await conn.execute("DELETE FROM fills WHERE session = $1", session)
        await conn.execute("UPDATE positions SET qty = 0 WHERE session = $1", session)
        await conn.execute("DELETE FROM pnl_snapshots WHERE session = $1", session)
        await conn.execute("INSERT INTO risk_events (session, rule, action, value, threshold) "
                           "VALUES ($1, 'late', 'Alert', 1, 2)", other)
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_server.url)
    await client.delete(session_prefix(*session.split("/")) + ":md")
    await client.set(session_prefix(*session.split("/")) + ":stray", "written after the backup")
    await client.aclose()
    damaged = await journal_state(journal_db, session)
    assert damaged["orders"]["rows"] == 1000 and damaged["fills"]["rows"] == 0

    proc = ok(backup_cli("restore", "--backup", f"{cluster.namespace}/b", "--session", session))
    assert f"restored session {session}" in proc.stdout

    after = await journal_state(journal_db, session)
    assert after == before                                   # row counts and checksums, table by table
    assert after["orders"]["rows"] == 2000
    whole_after = await journal_state(journal_db)
    assert whole_after["risk_events"]["rows"] == whole_before["risk_events"]["rows"] + 1  # the other session's row stays
    assert await redis_state(redis_server.url, session) == redis_before
    client = aioredis.Redis.from_url(redis_server.url)
    assert await client.get("tp:{other/session}:keep") == b"other"
    await client.aclose()
    assert "Restored" in cluster.events("b")
    # The journal keeps working after a restore: new rows get fresh ids.
    conn = await asyncpg.connect(journal_db)
    try:
        new_id = await conn.fetchval("INSERT INTO pnl_snapshots (session, equity, realized_pnl, unrealized_pnl, "
                                     "daily_pnl_pct, drawdown_pct, exposure) VALUES ($1, 1, 0, 0, 0, 0, 0) RETURNING id",
                                     session)
        assert new_id > await conn.fetchval("SELECT max(id) FROM pnl_snapshots WHERE id <> $1", new_id)
    finally:
        await conn.close()


async def test_restore_while_trading_is_refused_and_says_so(
        cluster: Cluster, backup_cli: Cli, journal_db: str) -> None:
    session = cluster.session()  # MarketOpen, not halted, not suspended
    await seed_journal(journal_db, session, orders=100)
    cluster.backup("b", targets=["journal"], verify=False)
    ok(backup_cli("run", "--backup", f"{cluster.namespace}/b"))
    conn = await asyncpg.connect(journal_db)
    try:
        await conn.execute("DELETE FROM fills")
    finally:
        await conn.close()

    proc = backup_cli("restore", "--backup", f"{cluster.namespace}/b", "--session", session)
    assert proc.returncode == 3
    assert "REFUSED" in proc.stderr and "is trading (phase MarketOpen" in proc.stderr
    assert "kubectl" in proc.stderr and '"halted":true' in proc.stderr
    assert (await journal_state(journal_db, session))["fills"]["rows"] == 0  # untouched
    assert "Restored" not in cluster.events("b")

    # Another session's name is refused too; suspended (maintenance mode) is allowed.
    wrong = backup_cli("restore", "--backup", f"{cluster.namespace}/b", "--session", f"{cluster.namespace}/nope")
    assert wrong.returncode == 3 and "not " + f"{cluster.namespace}/nope" in wrong.stderr
    cluster.patch("tradingsessions", "s", {"spec": {"suspend": True}})
    lacking = backup_cli("restore", "--backup", f"{cluster.namespace}/b", "--session", session, "--targets", "redis")
    assert lacking.returncode == 3 and "holds no redis" in lacking.stderr
    ok(backup_cli("restore", "--backup", f"{cluster.namespace}/b", "--session", session))
    assert (await journal_state(journal_db, session))["fills"]["rows"] > 0


# ------------------------------------------------------------------ retention

async def test_retention_over_a_series_of_runs_prunes_exactly_the_expected_ones(
        cluster: Cluster, backup_cli: Cli, journal_db: str, redis_server: RedisServer) -> None:
    session = cluster.session()
    await seed_journal(journal_db, session, orders=50)
    cluster.backup("b", targets=["journal", "redis"], verify=False, retention={"keepLast": 2})
    ids: list[str] = []
    for i in range(5):
        if i == 3:  # the fourth run fails: Redis is unreachable
            proc = backup_cli("run", "--backup", f"{cluster.namespace}/b", env={"TRADING_REDIS_URL": "redis://127.0.0.1:1/0"})
            assert proc.returncode == 1
        else:
            ok(backup_cli("run", "--backup", f"{cluster.namespace}/b"))
        ids.append(cluster.status("b")["history"][-1]["id"])
    # good: 0 1 2 4; failed: 3. keepLast 2 -> good 2 and 4 stay; 3 is older than the newest good run -> pruned.
    assert {p.name for p in run_dirs(backup_cli, "b")} == {ids[2], ids[4]}
    history = {h["id"]: h["phase"] for h in cluster.status("b")["history"]}
    assert history == {ids[0]: "Pruned", ids[1]: "Pruned", ids[2]: "Completed", ids[3]: "Pruned", ids[4]: "Completed"}
    assert "Pruned" in cluster.events("b")
