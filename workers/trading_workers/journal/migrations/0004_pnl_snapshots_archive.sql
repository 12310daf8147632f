-- 0004: what P&L snapshot retention removes is archived, not lost (the backup keeps it).
-- Retention (spec.journal.pnlSnapshots) moves the rows it downsamples away or deletes here, in the
-- same transaction; a journal Backup of the session dumps them with the rest of the database, and
-- once a run holding them has completed (and verified, if asked), the backup releases them
-- (trading_workers.journal.archive.release).

CREATE TABLE pnl_snapshots_archive (
    id               bigint PRIMARY KEY,            -- the row's id in pnl_snapshots
    session          text NOT NULL,
    at               timestamptz NOT NULL,
    equity           numeric(24, 8) NOT NULL,
    realized_pnl     numeric(24, 8) NOT NULL,
    unrealized_pnl   numeric(24, 8) NOT NULL,
    daily_pnl_pct    double precision NOT NULL,
    drawdown_pct     double precision NOT NULL,
    exposure         numeric(24, 8) NOT NULL,
    removed          text NOT NULL CHECK (removed IN ('downsampled', 'deleted')),
    archived_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX pnl_snapshots_archive_session_archived ON pnl_snapshots_archive (session, archived_at);
