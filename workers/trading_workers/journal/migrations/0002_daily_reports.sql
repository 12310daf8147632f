-- 0002: the daily report (trading_workers.report), one row per session day.
-- Rewritten while the day runs (final = false) and once more at the close (final = true);
-- the figures are kept as the JSON the risk worker also summarises in status.report.

CREATE TABLE daily_reports (
    session          text NOT NULL,
    day              date NOT NULL,                 -- the session day, in the calendar's time zone
    final            boolean NOT NULL DEFAULT false,
    report           jsonb NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, day)
);
