-- 0001: the trade journal.
-- Quantities and prices are numeric (exact decimal), never float: the journal
-- is the record auditors and backups compare, byte for byte.
-- Every table carries the session ("namespace/name") so one database can hold
-- many sessions; every write path is idempotent on a natural key
-- (client_order_id, fill_id, signal_id) so redelivered bus messages and
-- restarted executors never write a row twice.

CREATE TABLE orders (
    client_order_id  text PRIMARY KEY,              -- deterministic; journaled before the order is sent
    session          text NOT NULL,
    signal_id        text NOT NULL DEFAULT '',
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    qty              numeric(24, 8) NOT NULL CHECK (qty > 0),
    order_type       text NOT NULL CHECK (order_type IN ('market', 'limit')),
    limit_price      numeric(24, 8),
    status           text NOT NULL CHECK (status IN ('new', 'accepted', 'partially_filled', 'filled',
                                                     'canceled', 'rejected')),
    filled_qty       numeric(24, 8) NOT NULL DEFAULT 0,
    avg_fill_price   numeric(24, 8) NOT NULL DEFAULT 0,
    broker_order_id  text,
    reject_reason    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_session_status ON orders (session, status);

CREATE TABLE fills (
    session          text NOT NULL,
    fill_id          text NOT NULL,                 -- the broker's fill id (unique per broker account)
    client_order_id  text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    qty              numeric(24, 8) NOT NULL CHECK (qty > 0),
    price            numeric(24, 8) NOT NULL CHECK (price > 0),
    ts               timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, fill_id)
);
CREATE INDEX fills_session_ts ON fills (session, ts);
CREATE INDEX fills_order ON fills (client_order_id);

CREATE TABLE positions (
    session          text NOT NULL,
    symbol           text NOT NULL,
    qty              numeric(24, 8) NOT NULL DEFAULT 0,
    avg_price        numeric(24, 8) NOT NULL DEFAULT 0,
    realized_pnl     numeric(24, 8) NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, symbol)
);

-- Where the executor is in the broker's fill feed (written in the same
-- transaction as the fills it covers).
CREATE TABLE broker_cursors (
    session          text NOT NULL,
    broker           text NOT NULL,
    cursor           bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, broker)
);

CREATE TABLE pnl_snapshots (
    id               bigserial PRIMARY KEY,
    session          text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    equity           numeric(24, 8) NOT NULL,
    realized_pnl     numeric(24, 8) NOT NULL,
    unrealized_pnl   numeric(24, 8) NOT NULL,
    daily_pnl_pct    double precision NOT NULL,
    drawdown_pct     double precision NOT NULL,
    exposure         numeric(24, 8) NOT NULL
);
CREATE INDEX pnl_snapshots_session_at ON pnl_snapshots (session, at);

CREATE TABLE risk_events (
    id               bigserial PRIMARY KEY,
    session          text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    rule             text NOT NULL,
    action           text NOT NULL CHECK (action IN ('Alert', 'Reduce', 'Halt', 'Flatten')),
    value            double precision NOT NULL,
    threshold        double precision NOT NULL,
    message          text NOT NULL DEFAULT ''
);
CREATE INDEX risk_events_session_at ON risk_events (session, at);

CREATE TABLE session_transitions (
    id               bigserial PRIMARY KEY,
    session          text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    from_phase       text,
    to_phase         text NOT NULL,
    reason           text NOT NULL DEFAULT ''
);
CREATE INDEX session_transitions_session_at ON session_transitions (session, at);

-- Orders refused by a pre-trade check (never sent, never in orders).
CREATE TABLE rejections (
    id               bigserial PRIMARY KEY,
    session          text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    signal_id        text NOT NULL,
    client_order_id  text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL,
    qty              double precision NOT NULL,   -- as received: may be invalid (that can be the reason)
    limit_price      double precision,
    reason           text NOT NULL,
    UNIQUE (session, client_order_id)
);
CREATE INDEX rejections_session_reason ON rejections (session, reason);
