"""Backups to a real S3-compatible server (versitygw): run, verify what was stored, retention, restore.

The drill of issue 17: a backup to S3 restores identically, with the same verification as a volume
(artifact sha256s, a scratch restore of the journal) plus a read-back of every stored object.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.backup.conftest import Cluster, journal_state, seed_journal
from tests.backup.test_backup_run import ok, redis_state, seed_redis
from tests.fixtures.servers import ObjectStoreServer, RedisServer
from trading_workers import objectstore
from trading_workers.backup import manifest as mf
from trading_workers.bus import session_prefix

pytestmark = [pytest.mark.cluster, pytest.mark.services]

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def bucket(object_store: ObjectStoreServer, cluster: Cluster) -> str:
    return object_store.create_bucket(f"bk-{cluster.namespace}"[:63])


def s3_backup(cluster: Cluster, bucket: str, name: str, **spec: object) -> None:
    """A Backup to ``bucket``; the Job would get the endpoint and keys from it (here: the CLI's env)."""
    destination = {"s3": {"bucket": bucket.removeprefix("s3://"), "prefix": "demo/backups",
                          "credentialsSecretRef": {"name": "s3-keys"}}}
    cluster.backup(name, destination=destination, **spec)


def s3_cli(backup_cli: Cli, object_store: ObjectStoreServer, bucket: str) -> Cli:
    """The backup command as the Job runs it for an S3 destination (TRADING_BACKUP_URI, the keys as env)."""
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return backup_cli(*args, env={**object_store.env, "TRADING_BACKUP_URI": f"{bucket}/demo/backups",
                                      "TRADING_BACKUP_LOCATION": "", **(env or {})})
    return run


def stored(object_store: ObjectStoreServer, bucket: str, backup: str) -> objectstore.S3Store:
    settings = objectstore.S3Settings.from_env(object_store.env)
    return objectstore.open_s3(f"{bucket}/demo/backups/{backup}", settings)


async def test_a_backup_to_s3_is_verified_in_the_bucket_and_restores_identically(
        cluster: Cluster, backup_cli: Cli, journal_db: str, redis_server: RedisServer,
        object_store: ObjectStoreServer, bucket: str) -> None:
    session = cluster.session(phases=("Initializing", "PreMarket", "MarketOpen", "Halted"))
    await seed_journal(journal_db, session, orders=2000)
    await seed_redis(redis_server.url, session)
    before = await journal_state(journal_db, session)
    redis_before = await redis_state(redis_server.url, session)
    s3_backup(cluster, bucket, "b", targets=["journal", "redis", "models", "resources"])
    cli = s3_cli(backup_cli, object_store, bucket)

    proc = ok(cli("run", "--backup", f"{cluster.namespace}/b"))
    progress = [json.loads(line)["msg"] for line in proc.stderr.splitlines() if line.startswith("{")]
    assert "journal verified by a scratch restore" in progress and "run uploaded" in progress
    status = cluster.status("b")
    run_id = status["history"][-1]["id"]
    assert status["phase"] == "Completed" and status["verified"] is True
    assert status["location"] == f"{bucket}/demo/backups/b/{run_id}"

    # The bucket holds the run; every stored object, read back here independently, matches the manifest.
    store = stored(object_store, bucket, "b").child(run_id)
    raw_manifest = store.get_bytes(mf.MANIFEST)
    assert hashlib.sha256(raw_manifest).hexdigest() == status["sha256"]
    manifest = json.loads(raw_manifest)
    assert {a["target"] for a in manifest["artifacts"]} == {"journal", "redis", "models", "resources"}
    for art in manifest["artifacts"]:
        data = store.get_bytes(art["path"])
        assert len(data) == art["size"] and hashlib.sha256(data).hexdigest() == art["sha256"], art["path"]
    assert json.loads(store.get_bytes("verify.json"))["ok"] is True
    assert not list(backup_cli.destination.glob(f"b/{run_id}/*")), "the staging copy is removed"  # type: ignore[attr-defined]

    # Lose data, then restore from the bucket: the journal and the session's keys are identical again.
    conn = await asyncpg.connect(journal_db)
    try:
        await conn.execute("DELETE FROM fills WHERE session = $1", session)
        await conn.execute("DELETE FROM orders WHERE session = $1 AND client_order_id > 'o-000999'", session)
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_server.url)
    await client.delete(session_prefix(*session.split("/")) + ":md")
    await client.aclose()
    assert (await journal_state(journal_db, session))["fills"]["rows"] == 0

    proc = ok(cli("restore", "--backup", f"{cluster.namespace}/b", "--session", session))
    assert f"restored session {session} from run {run_id}" in proc.stdout
    assert await journal_state(journal_db, session) == before
    assert await redis_state(redis_server.url, session) == redis_before

    # verify reads the run back from the bucket and checks it again (sha256s, scratch restore).
    ok(cli("verify", "--backup", f"{cluster.namespace}/b", "--run", run_id))
    assert cluster.status("b")["verified"] is True


async def test_a_corrupted_object_in_the_bucket_fails_verification_and_is_never_restored(
        cluster: Cluster, backup_cli: Cli, journal_db: str, object_store: ObjectStoreServer, bucket: str) -> None:
    session = cluster.session()
    await seed_journal(journal_db, session, orders=300)
    s3_backup(cluster, bucket, "b", targets=["journal", "resources"])
    cli = s3_cli(backup_cli, object_store, bucket)
    ok(cli("run", "--backup", f"{cluster.namespace}/b"))
    run_id = cluster.status("b")["history"][-1]["id"]
    store = stored(object_store, bucket, "b").child(run_id)
    data = bytearray(store.get_bytes("journal/journal.dump"))
    data[len(data) // 2] ^= 0x01
    store.put_bytes("journal/journal.dump", bytes(data))

    proc = cli("verify", "--backup", f"{cluster.namespace}/b", "--run", run_id)
    assert proc.returncode == 1 and "journal/journal.dump" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    status = cluster.status("b")
    assert status["verified"] is False and "journal/journal.dump: sha256" in status["history"][-1]["message"]
    assert json.loads(store.get_bytes("verify.json"))["ok"] is False      # the bucket says so too
    cluster.patch("tradingsessions", "s", {"spec": {"suspend": True}})
    refused = cli("restore", "--backup", f"{cluster.namespace}/b", "--run", run_id, "--session", session)
    assert refused.returncode == 3 and "journal/journal.dump" in refused.stderr


async def test_retention_in_the_bucket_and_a_failed_upload_fails_the_run(
        cluster: Cluster, backup_cli: Cli, journal_db: str, object_store: ObjectStoreServer, bucket: str) -> None:
    session = cluster.session()
    await seed_journal(journal_db, session, orders=50)
    s3_backup(cluster, bucket, "b", targets=["journal"], verify=False, retention={"keepLast": 2})
    cli = s3_cli(backup_cli, object_store, bucket)
    ids = []
    for _ in range(3):
        ok(cli("run", "--backup", f"{cluster.namespace}/b"))
        ids.append(cluster.status("b")["history"][-1]["id"])
    runs = {o.key.split("/")[0] for o in stored(object_store, bucket, "b").objects()}
    assert runs == {ids[1], ids[2]}
    assert {h["id"]: h["phase"] for h in cluster.status("b")["history"]} == {
        ids[0]: "Pruned", ids[1]: "Completed", ids[2]: "Completed"}

    failed = cli("run", "--backup", f"{cluster.namespace}/b", env={"AWS_SECRET_ACCESS_KEY": "wrong"})
    assert failed.returncode == 1
    last = cluster.status("b")["history"][-1]
    assert last["phase"] == "Failed" and "upload:" in last["message"], last
    assert {o.key.split("/")[0] for o in stored(object_store, bucket, "b").objects()} == {ids[1], ids[2]}
