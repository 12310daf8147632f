"""The journal's table checksums: the method a run was taken with is the method it is verified with.

New runs checksum every row's exact binary form with sha256 (``sha256-binary``); runs taken before
name no method and were checksummed as md5 of the rows' text (``md5-text``): both still verify, and
a snapshot figure that the restore does not reproduce fails either way.
"""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Callable

import asyncpg
import pytest

from tests.backup.conftest import Cluster, seed_journal
from tests.backup.test_backup_run import ok, run_dirs
from trading_workers.backup import manifest as mf
from trading_workers.backup import postgres as pg

pytestmark = [pytest.mark.cluster, pytest.mark.services]

Cli = Callable[..., subprocess.CompletedProcess[str]]


def reseal(cluster: Cluster, run_dir: pathlib.Path, man: mf.Manifest) -> None:
    """Write the manifest as that version would have, and record its sha256 in the Backup's status as the run did."""
    sha = mf.write(run_dir, man)
    history = cluster.status("b")["history"]
    history[-1]["sha256"] = sha
    cluster.patch_status("backups", "b", {"history": history})


async def test_new_runs_name_their_method_and_old_runs_verify_with_theirs(
        cluster: Cluster, backup_cli: Cli, journal_db: str) -> None:
    session = cluster.session()
    await seed_journal(journal_db, session, orders=400)
    cluster.backup("b", targets=["journal"])
    ok(backup_cli("run", "--backup", f"{cluster.namespace}/b"))
    [run_dir] = run_dirs(backup_cli, "b")
    man = mf.read(run_dir)
    journal = man.details["journal"]
    assert journal["checksum"] == pg.CHECKSUM == "sha256-binary"
    assert all(len(t["checksum"]) == 64 for t in journal["tables"].values())

    # The same run as an older version wrote it: md5-text figures, no method named.
    conn = await pg.connect(journal_db)
    try:
        legacy = await pg.digests(conn, method=pg.CHECKSUM_LEGACY)
        assert legacy != journal["tables"] and {t["rows"] for t in legacy.values()} == \
            {t["rows"] for t in journal["tables"].values()}
    finally:
        await conn.close()
    del journal["checksum"]
    journal["tables"] = legacy
    reseal(cluster, run_dir, man)
    ok(backup_cli("verify", "--backup", f"{cluster.namespace}/b", "--run", run_dir.name))

    # A figure the restore does not reproduce fails under the old method too.
    journal["tables"]["orders"]["checksum"] = "0" * 32
    reseal(cluster, run_dir, man)
    proc = backup_cli("verify", "--backup", f"{cluster.namespace}/b", "--run", run_dir.name)
    assert proc.returncode == 1 and "orders checksum" in proc.stdout, proc.stdout + proc.stderr[-2000:]


async def test_the_binary_checksum_sees_what_text_equality_would_not(journal_db: str) -> None:
    """A numeric's display scale and a float's last bit are part of the row: the checksum changes with them."""
    conn = await asyncpg.connect(journal_db)
    try:
        await conn.execute("CREATE TABLE probe (id int PRIMARY KEY, amount numeric, x double precision)")
        await conn.execute("INSERT INTO probe VALUES (1, 100.5, 0.1)")
        before = await pg.digest(conn, "probe")
        await conn.execute("UPDATE probe SET amount = 100.50")                 # equal as a number, not as data
        scaled = await pg.digest(conn, "probe")
        await conn.execute("UPDATE probe SET amount = 100.5, x = 0.1::float8 + 1e-17::float8")  # the next float
        nudged = await pg.digest(conn, "probe")
        await conn.execute("UPDATE probe SET x = 0.1")
        again = await pg.digest(conn, "probe")
    finally:
        await conn.close()
    assert len({before["checksum"], scaled["checksum"], nudged["checksum"]}) == 3
    assert again == before
