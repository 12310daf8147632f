"""The archive of what journal retention removes, and its release once a backup holds it.

P&L snapshot retention (``spec.journal.pnlSnapshots``, applied by the risk worker through
``Journal.retain_snapshots``) does not lose rows: it moves every row it downsamples away or deletes
into ``pnl_snapshots_archive`` in the same transaction. The journal backup (``pg_dump`` of the whole
database) therefore holds them, and ``release`` — the one hook the backup calls, after a run of the
session's journal completed (and verified, when the Backup asks for it) — removes from the archive
what that run holds: the session's rows archived before the run started, less ``MARGIN`` (the
archive is stamped by the database's clock, the run's start by the backup pod's; retention runs
hourly, so a row archived within the margin simply waits for the next run).

Without a journal Backup of the session the archive is never released: retention then keeps the
live table small, not the database.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

MARGIN = dt.timedelta(minutes=10)


async def release(dsn: str, session: str, run_started: dt.datetime) -> int:
    """Delete the session's archived rows a journal backup that started at ``run_started`` holds; how many."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        if not await conn.fetchval("SELECT to_regclass('public.pnl_snapshots_archive') IS NOT NULL"):
            return 0   # a journal no worker has migrated to 0004 yet: nothing was archived
        result = await conn.execute("DELETE FROM pnl_snapshots_archive WHERE session = $1 AND archived_at < $2",
                                    session, run_started - MARGIN)
    finally:
        await conn.close()
    return int(result.split()[-1])
