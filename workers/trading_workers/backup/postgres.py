"""The journal target: a consistent ``pg_dump``, its proof, a scratch-restore check, a session restore.

**Consistency.** The dump and the numbers it is later checked against must
describe the same instant, or a verification of a busy journal would fail
(or, worse, pass by luck). So the backup opens one ``REPEATABLE READ``
transaction, exports its snapshot (``pg_export_snapshot``), runs
``pg_dump --snapshot=<id>`` against it, and — in that same transaction,
while pg_dump runs — counts the rows and checksums every table. Both see
exactly the same rows.

**Checksums.** Per table: the row count and a digest of the rows that is
independent of physical row order (which a restore does not preserve): every
row is hashed, the row hashes are sorted, and their concatenation is hashed.
Two methods, named in the manifest (``details.journal.checksum``) so a run is
always verified with the method it was taken with:

* ``sha256-binary`` (current): sha256 of each row's exact binary form
  (``record_send``: every column's binary send format, e.g. a numeric with its
  display scale, a float to the bit), sorted as bytes, then sha256 of the
  concatenation. A table with a column of a non-built-in type (whose binary
  form carries a per-database type OID) is hashed in text form instead, row by
  row the same way. About 30 % less server CPU than ``md5-text`` (measured in
  docs/benchmarks.md), with a stronger row hash.
* ``md5-text`` (runs taken before): md5 of the rows' md5s of their text form,
  sorted. Row text depends on session settings (time zone, float digits), so
  both sides set the same ones (``SETTINGS``).

**Verify** restores the dump into a throw-away database on the same server
(``CREATE DATABASE``; dropped afterwards, also on failure) with
``pg_restore`` and compares the counts and checksums table by table.

**Restore** is per session, not per database: one journal database holds
many sessions (every row carries its session), and only the session being
restored is halted. The dump is restored into a scratch database, brought to
the current schema with the journal's own migrations, and then, in one
transaction on the live journal, the session's rows are deleted and copied
back from the scratch database (binary ``COPY``). Other sessions' rows are
not touched. Sequences are moved forward past the restored ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import pathlib
import secrets
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from trading_workers.errors import ConfigError, PermanentError
from trading_workers.journal import migrate

log = logging.getLogger("trading_workers.backup.postgres")

DUMP_NAME = "journal/journal.dump"
SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "extra_float_digits": "1",
            "bytea_output": "hex"}
SCHEMA = "public"
DIGEST_PARALLELISM = int(os.environ.get("TRADING_BACKUP_DIGEST_PARALLELISM", "3"))
CHECKSUM = "sha256-binary"       # how new runs checksum tables (module docstring); named in the manifest
CHECKSUM_LEGACY = "md5-text"     # runs whose manifest names no method


class JournalBackupError(PermanentError):
    """pg_dump/pg_restore failed, or the journal cannot be backed up/restored as asked."""


def pg_bin(name: str) -> str:
    """A PostgreSQL client binary: ``$TRADING_PG_BIN``, the newest ``/usr/lib/postgresql/*/bin``, or ``$PATH``.

    The newest: pg_dump must be at least as new as the server it dumps.
    """
    env = os.environ.get("TRADING_PG_BIN")
    dirs = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                    key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                                    reverse=True)
    for directory in dirs:
        candidate = pathlib.Path(directory) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise ConfigError(f"{name} not found (install the PostgreSQL client, or set TRADING_PG_BIN)")


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database (URI DSNs only)."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError("the journal DSN must be a postgresql:// URI")
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(database)))


def database_of(dsn: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.unquote(parts.path.lstrip("/")) or (parts.username or "postgres")


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=10, server_settings=SETTINGS, **kwargs)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise JournalBackupError(f"cannot connect to the journal database: {exc.__class__.__name__}: {exc}") from exc


async def tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("""
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname""", SCHEMA)
    return [r["relname"] for r in rows]


async def session_tables(conn: asyncpg.Connection) -> list[str]:
    """Tables with a ``session`` column: the rows a session owns."""
    rows = await conn.fetch("""
        SELECT table_name FROM information_schema.columns
        WHERE table_schema = $1 AND column_name = 'session' ORDER BY table_name""", SCHEMA)
    return [r["table_name"] for r in rows]


async def _builtin_types_only(conn: asyncpg.Connection, table: str) -> bool:
    """Every column of a built-in type (OID below FirstNormalObjectId): its binary form is the same in any database."""
    return bool(await conn.fetchval("""
        SELECT coalesce(bool_and(a.atttypid < 16384), true) FROM pg_attribute a
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped""", f"{SCHEMA}.{ident(table)}"))


async def digest(conn: asyncpg.Connection, table: str, session: str | None = None,
                 method: str = CHECKSUM) -> dict[str, Any]:
    """Row count and checksum of one table (only the session's rows, if given), by ``method``."""
    where, args = ("WHERE t.session = $1", [session]) if session is not None else ("", [])
    if method == CHECKSUM:
        row_form = "record_send(t)" if await _builtin_types_only(conn, table) else "convert_to(t::text, 'UTF8')"
        query = f"""
        SELECT count(*) AS rows, encode(sha256(coalesce(string_agg(h, '' ORDER BY h), '')), 'hex') AS checksum
        FROM (SELECT sha256({row_form}) AS h FROM {SCHEMA}.{ident(table)} t {where}) s"""
    elif method == CHECKSUM_LEGACY:
        query = f"""
        SELECT count(*) AS rows, md5(coalesce(string_agg(h, '' ORDER BY h), '')) AS checksum
        FROM (SELECT md5(t::text) AS h FROM {SCHEMA}.{ident(table)} t {where}) s"""
    else:
        raise JournalBackupError(f"unknown checksum method {method!r} in the manifest")
    row = await conn.fetchrow(query, *args)
    assert row is not None
    return {"rows": int(row["rows"]), "checksum": str(row["checksum"])}


async def digests(conn: asyncpg.Connection, session: str | None = None,
                  method: str = CHECKSUM) -> dict[str, dict[str, Any]]:
    """Row count and checksum of every table (only the session's rows, and only its tables, if given)."""
    names = await session_tables(conn) if session is not None else await tables(conn)
    return {table: await digest(conn, table, session, method) for table in names}


async def snapshot_digests(conn: asyncpg.Connection, dsn: str, snapshot: str,
                           parallel: int = DIGEST_PARALLELISM) -> dict[str, dict[str, Any]]:
    """``digests`` of an exported snapshot, tables spread over a few connections that all import it.

    The big tables (orders, fills) then cost the time of the biggest, not the sum, on a server with cores
    to spare; every connection sees exactly the snapshot pg_dump sees.
    """
    names = await tables(conn)
    sizes = {r["relname"]: int(r["size"]) for r in await conn.fetch("""
        SELECT c.relname, pg_total_relation_size(c.oid) AS size FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')""", SCHEMA)}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for table in sorted(names, key=lambda t: -sizes.get(t, 0)):   # biggest first: the last to finish is a small one
        queue.put_nowait(table)
    out: dict[str, dict[str, Any]] = {}

    async def worker() -> None:
        c = await connect(dsn)
        try:
            async with c.transaction(isolation="repeatable_read", readonly=True):
                await c.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                while not queue.empty():
                    table = queue.get_nowait()
                    out[table] = await digest(c, table)
        finally:
            await c.close()

    await asyncio.gather(*(worker() for _ in range(max(1, min(parallel, len(names))))))
    return {table: out[table] for table in names}


def compare(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list[str]:
    """Differences, table by table, worded for a status message."""
    problems = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want is None:
            problems.append(f"table {table} is not in the backup's snapshot")
        elif got is None:
            problems.append(f"table {table} is missing after restore")
        elif want["rows"] != got["rows"]:
            problems.append(f"{table} rows {got['rows']} != {want['rows']}")
        elif want["checksum"] != got["checksum"]:
            problems.append(f"{table} checksum {got['checksum']} != {want['checksum']}")
    return problems


def without_password(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN minus its password, and the environment that carries it (``PGPASSWORD``), so no password
    shows up in the process list."""
    parts = urllib.parse.urlsplit(dsn)
    if not parts.password:
        return dsn, {}
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}@" if user else ""
    netloc += f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"PGPASSWORD": urllib.parse.unquote(parts.password)}


async def _run(argv: list[str], what: str, dsn: str | None = None) -> str:
    env = None
    if dsn is not None:
        clean, extra = without_password(dsn)
        argv = [a.replace(f"--dbname={dsn}", f"--dbname={clean}") for a in argv]
        env = {**os.environ, **extra} if extra else None
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise JournalBackupError(f"{what} failed (exit {proc.returncode}): {err.decode(errors='replace')[-1500:]}")
    return out.decode(errors="replace")


async def dump(dsn: str, out: pathlib.Path) -> dict[str, Any]:
    """``pg_dump -Fc`` of the journal database and the tables' counts/checksums, in one snapshot."""
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    conn = await connect(dsn)
    try:
        tx = conn.transaction(isolation="repeatable_read", readonly=True)
        await tx.start()
        try:
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            version = await conn.fetchval("SHOW server_version")
            log.info("journal snapshot taken; dumping", extra={"snapshot": snapshot, "database": database_of(dsn)})
            dumper = asyncio.create_task(_run(
                [pg_bin("pg_dump"), "--format=custom", f"--snapshot={snapshot}", "--no-password",
                 f"--file={out}", f"--dbname={dsn}"], "pg_dump", dsn))
            try:
                tables_ = await snapshot_digests(conn, dsn, str(snapshot))
            finally:
                await dumper  # the snapshot must outlive pg_dump's import of it
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    pg_dump_version = await _pg_dump_version()
    seconds = time.monotonic() - started
    log.info("journal dumped", extra={"bytes": out.stat().st_size, "seconds": round(seconds, 3),
                                      "tables": len(tables_), "rows": sum(t["rows"] for t in tables_.values())})
    return {"database": database_of(dsn), "serverVersion": version, "pgDump": pg_dump_version,
            "snapshot": snapshot, "checksum": CHECKSUM, "tables": tables_, "seconds": round(seconds, 3)}


_VERSIONS: dict[str, str] = {}


async def _pg_dump_version() -> str:
    """``pg_dump --version``, asked once per process (a backup run asks for it after every dump)."""
    binary = pg_bin("pg_dump")
    if binary not in _VERSIONS:
        _VERSIONS[binary] = (await _run([binary, "--version"], "pg_dump --version")).strip()
    return _VERSIONS[binary]


@contextlib.asynccontextmanager
async def scratch_database(dsn: str, purpose: str) -> AsyncIterator[str]:
    """A throw-away database on the journal's server; yields its DSN, drops it afterwards."""
    name = f"tp_{purpose}_{secrets.token_hex(6)}"
    admin = await connect(dsn)
    try:
        await admin.execute(f"CREATE DATABASE {ident(name)} TEMPLATE template0")
    except asyncpg.PostgresError as exc:
        await admin.close()
        raise JournalBackupError(f"cannot create the scratch database (CREATEDB privilege needed): {exc}") from exc
    try:
        yield with_database(dsn, name)
    finally:
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE)")
        except asyncpg.PostgresError as exc:
            log.warning("could not drop the scratch database", extra={"database": name, "error": str(exc)})
        await admin.close()


async def pg_restore(dump_path: pathlib.Path, dsn: str) -> None:
    await _run([pg_bin("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", "--no-password",
                f"--dbname={dsn}", str(dump_path)], "pg_restore", dsn)


async def verify(dump_path: pathlib.Path, dsn: str, expected: dict[str, dict[str, Any]],
                 method: str = CHECKSUM_LEGACY) -> list[str]:
    """Restore into a scratch database and compare counts/checksums with the snapshot's; returns the differences.

    ``method``: the checksum method the snapshot's figures were taken with (``details.journal.checksum``;
    a manifest without one is ``md5-text``).
    """
    started = time.monotonic()
    async with scratch_database(dsn, "verify") as scratch:
        await pg_restore(dump_path, scratch)
        conn = await connect(scratch)
        try:
            actual = await digests(conn, method=method)
        finally:
            await conn.close()
    problems = compare(expected, actual)
    log.info("journal verified by a scratch restore" if not problems else "journal verification FAILED",
             extra={"seconds": round(time.monotonic() - started, 3), "tables": len(actual), "problems": problems})
    return problems


async def restore_session(dump_path: pathlib.Path, dsn: str, session: str) -> dict[str, int]:
    """Replace ``session``'s rows in the live journal with those in the dump; returns rows restored per table."""
    restored: dict[str, int] = {}
    async with scratch_database(dsn, "restore") as scratch_dsn:
        await pg_restore(dump_path, scratch_dsn)
        src = await connect(scratch_dsn)
        dst = await connect(dsn)
        try:
            await migrate(src)   # the dump's schema, brought to this code's schema
            await migrate(dst)   # the live journal may have been lost entirely
            owned = await session_tables(src)
            async with dst.transaction():
                for table in owned:
                    columns = [r["attname"] for r in await src.fetch("""
                        SELECT attname FROM pg_attribute
                        WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
                        f"{SCHEMA}.{ident(table)}")]
                    cols = ", ".join(ident(c) for c in columns)
                    await dst.execute(f"DELETE FROM {SCHEMA}.{ident(table)} WHERE session = $1", session)
                    with tempfile.TemporaryFile() as buf:
                        await src.copy_from_query(f"SELECT {cols} FROM {SCHEMA}.{ident(table)} WHERE session = $1",
                                                  session, output=buf, format="binary")
                        buf.seek(0)
                        await dst.copy_to_table(table, schema_name=SCHEMA, source=buf, columns=columns,
                                                format="binary")
                    restored[table] = int(await dst.fetchval(
                        f"SELECT count(*) FROM {SCHEMA}.{ident(table)} WHERE session = $1", session))
                    await _advance_sequences(dst, table, columns)
        finally:
            await src.close()
            await dst.close()
    log.info("journal restored", extra={"session": session, "rows": restored})
    return restored


async def _advance_sequences(conn: asyncpg.Connection, table: str, columns: list[str]) -> None:
    """Move serial sequences past the highest restored id (never backwards)."""
    for column in columns:
        seq = await conn.fetchval("SELECT pg_get_serial_sequence($1, $2)", f"{SCHEMA}.{ident(table)}", column)
        if seq is None:
            continue
        await conn.execute(f"""
            SELECT setval($1::regclass, GREATEST(
                (SELECT last_value FROM {seq}), (SELECT coalesce(max({ident(column)}), 1) FROM {SCHEMA}.{ident(table)})))""",
            seq)
