-- 0003: end-of-day reconciliations (trading_workers.executor.eod), one row per run.
-- Written by the executor at the close and on demand; the differences are kept as the JSON the
-- executor also writes to status.executor.reconciliation (there capped at 50, here all of them).

CREATE TABLE reconciliations (
    id               bigserial PRIMARY KEY,
    session          text NOT NULL,
    day              date NOT NULL,                 -- the session day, in the calendar's time zone
    at               timestamptz NOT NULL DEFAULT now(),
    trigger          text NOT NULL CHECK (trigger IN ('Close', 'Request')),
    broker           text NOT NULL,
    clean            boolean NOT NULL,
    positions        integer NOT NULL DEFAULT 0,    -- symbols compared
    fills            integer NOT NULL DEFAULT 0,    -- the day's fills compared
    adopted          integer NOT NULL DEFAULT 0,
    flagged          integer NOT NULL DEFAULT 0,
    differences      jsonb NOT NULL DEFAULT '[]',
    request          text
);
CREATE INDEX reconciliations_session_day ON reconciliations (session, day);
