"""Versioned SQL migrations for the trade journal.

Migrations are plain SQL files shipped in the package
(``migrations/NNNN_name.sql``), applied in order, each in its own
transaction, and recorded in ``schema_migrations`` with a checksum. A
PostgreSQL advisory lock serialises concurrent starters (the executor and
the risk worker may start together). An applied migration whose file has
changed since is refused: history is append-only, a new change is a new
file.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass

import asyncpg

from trading_workers.errors import ConfigError

_LOCK_KEY = 0x7470_6A6F  # "tpjo": advisory lock id for migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    found = []
    for entry in importlib.resources.files("trading_workers.journal").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )""")
        done = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
        for migration in migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise ConfigError(f"migration {migration.version:04d}_{migration.name} changed after it was "
                                      "applied; add a new migration instead")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                                   migration.version, migration.name, migration.checksum)
            applied_now.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
