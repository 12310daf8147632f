"""The trade journal (PostgreSQL via asyncpg): the executor's memory of record.

Rules this module enforces, because the executor's no-loss / no-duplicate
guarantees rest on them:

* An order is written with status ``new`` and its deterministic
  ``client_order_id`` *before* it is sent (``record_new_order``). The
  primary key on ``client_order_id`` makes the write idempotent: a
  redelivered intent finds the existing row and the executor retries with
  that same id, never a new one.
* Fills are keyed by (session, the broker's fill id) and applied to orders and
  positions in the same transaction as the fill cursor, so a crash between
  two steps cannot double-count or skip a fill.
* Order status only moves forward (new -> accepted -> partially filled ->
  filled | canceled | rejected); a stale broker snapshot cannot move an
  order back.

Every database failure that may heal (server down, connection lost,
timeout) surfaces as ``DependencyUnavailable("journal")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from trading_workers import report as report_mod
from trading_workers.domain import Fill, Order, OrderStatus, OrderType, Position, Side
from trading_workers.errors import DependencyUnavailable
from trading_workers.journal.migrate import migrate

TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
             asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.TooManyConnectionsError)

_RANK = {OrderStatus.NEW: 0, OrderStatus.ACCEPTED: 1, OrderStatus.PARTIALLY_FILLED: 2,
         OrderStatus.FILLED: 3, OrderStatus.CANCELED: 3, OrderStatus.REJECTED: 3}
_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED})


def _allowed_from(status: OrderStatus) -> list[str]:
    """Statuses an order may move to ``status`` from (forward only; terminal is final)."""
    return [s.value for s, r in _RANK.items() if s not in _TERMINAL and r <= _RANK[status]]


def _f(value: Decimal | float | None) -> float:
    return float(value) if value is not None else 0.0


def _order(row: asyncpg.Record) -> Order:
    return Order(client_order_id=row["client_order_id"], symbol=row["symbol"], side=Side(row["side"]),
                 qty=_f(row["qty"]), order_type=OrderType(row["order_type"]),
                 limit_price=None if row["limit_price"] is None else float(row["limit_price"]),
                 status=OrderStatus(row["status"]), filled_qty=_f(row["filled_qty"]),
                 avg_fill_price=_f(row["avg_fill_price"]), broker_order_id=row["broker_order_id"],
                 reject_reason=row["reject_reason"])


def _ts(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)


@dataclass(frozen=True, slots=True)
class Counts:
    orders: int
    fills: int
    rejected: int
    open_orders: int


@dataclass(frozen=True, slots=True)
class PnlSnapshot:
    equity: float
    realized_pnl: float
    unrealized_pnl: float
    daily_pnl_pct: float
    drawdown_pct: float
    exposure: float
    at: dt.datetime | None = None


class Journal:
    """One session's view of the journal database."""

    def __init__(self, pool: asyncpg.Pool, session: str) -> None:
        self.pool = pool
        self.session = session

    @classmethod
    async def open(cls, dsn: str, session: str, *, min_size: int = 1, max_size: int = 4,
                   timeout: float = 5.0) -> Journal:
        """Connect, apply pending migrations, return the journal. Raises ``DependencyUnavailable``."""
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=timeout,
                                             command_timeout=timeout)
        except TRANSIENT as exc:
            raise DependencyUnavailable("journal", exc.__class__.__name__) from exc
        journal = cls(pool, session)
        try:
            async with journal._conn() as conn:
                await migrate(conn)
        except BaseException:
            await journal.close()
            raise
        return journal

    async def close(self) -> None:
        with contextlib.suppress(*TRANSIENT):
            await asyncio.wait_for(self.pool.close(), timeout=5)

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self.pool.acquire(timeout=5) as conn:
                yield conn
        except TRANSIENT as exc:
            raise DependencyUnavailable("journal", exc.__class__.__name__) from exc

    async def ping(self) -> bool:
        try:
            async with self._conn() as conn:
                await conn.fetchval("SELECT 1", timeout=2)
        except DependencyUnavailable:
            return False
        return True

    # ------------------------------------------------------------ orders

    async def record_new_order(self, order: Order, signal_id: str) -> tuple[Order, bool]:
        """Journal ``order`` as NEW before it is sent. Returns (the journaled order, created now?).

        If the id exists (a redelivered intent, a restarted executor) the existing row wins.
        """
        async with self._conn() as conn:
            row = await conn.fetchrow("""
                INSERT INTO orders (client_order_id, session, signal_id, symbol, side, qty, order_type,
                                    limit_price, status)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'new')
                ON CONFLICT (client_order_id) DO NOTHING
                RETURNING *""", order.client_order_id, self.session, signal_id, order.symbol, order.side.value,
                order.qty, order.order_type.value, order.limit_price)
            if row is not None:
                return _order(row), True
            row = await conn.fetchrow("SELECT * FROM orders WHERE client_order_id = $1", order.client_order_id)
            assert row is not None
            return _order(row), False

    async def update_order(self, coid: str, status: OrderStatus, *, broker_order_id: str | None = None,
                           reject_reason: str | None = None) -> bool:
        """Move an order forward to ``status`` (no-op if that would move it back). True if changed."""
        async with self._conn() as conn:
            result = await conn.execute("""
                UPDATE orders SET status = $2, broker_order_id = COALESCE($3, broker_order_id),
                                  reject_reason = COALESCE($4, reject_reason), updated_at = now()
                WHERE client_order_id = $1 AND session = $5 AND status = ANY($6::text[])
                  AND status <> $2""",
                coid, status.value, broker_order_id, reject_reason, self.session, _allowed_from(status))
        return bool(result.endswith(" 1"))

    async def lookup(self, coid: str) -> tuple[Order | None, bool]:
        """(the journaled order, whether a pre-trade rejection was journaled) for ``coid``, in one round trip."""
        async with self._conn() as conn:
            row = await conn.fetchrow("""
                SELECT o.*, EXISTS (SELECT 1 FROM rejections r
                                    WHERE r.session = $2 AND r.client_order_id = $1) AS was_rejected
                FROM (SELECT 1) AS one
                LEFT JOIN orders o ON o.client_order_id = $1 AND o.session = $2""", coid, self.session)
        assert row is not None
        return (_order(row) if row["client_order_id"] is not None else None), bool(row["was_rejected"])

    async def get_order(self, coid: str) -> Order | None:
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT * FROM orders WHERE client_order_id = $1 AND session = $2",
                                      coid, self.session)
        return _order(row) if row else None

    async def open_orders(self) -> list[Order]:
        async with self._conn() as conn:
            rows = await conn.fetch("""
                SELECT * FROM orders WHERE session = $1 AND status IN ('new', 'accepted', 'partially_filled')
                ORDER BY created_at""", self.session)
        return [_order(r) for r in rows]

    async def orders(self) -> list[Order]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM orders WHERE session = $1 ORDER BY created_at", self.session)
        return [_order(r) for r in rows]

    # ------------------------------------------------------------ fills and positions

    async def broker_cursor(self, broker: str) -> int:
        async with self._conn() as conn:
            value = await conn.fetchval("SELECT cursor FROM broker_cursors WHERE session = $1 AND broker = $2",
                                        self.session, broker)
        return int(value or 0)

    async def record_fills(self, fills: Iterable[Fill], *, broker: str, cursor: int) -> list[Fill]:
        """Apply new fills to orders and positions and advance the cursor, atomically.

        Returns the fills that were new to the journal (already-known fill ids are skipped).
        """
        applied: list[Fill] = []
        async with self._conn() as conn, conn.transaction():
            for fill in fills:
                inserted = await conn.fetchval("""
                    INSERT INTO fills (fill_id, client_order_id, session, symbol, side, qty, price, ts)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    ON CONFLICT (session, fill_id) DO NOTHING RETURNING fill_id""",
                    fill.fill_id, fill.client_order_id, self.session, fill.symbol, fill.side.value, fill.qty,
                    fill.price, _ts(fill.ts))
                if inserted is None:
                    continue
                await conn.execute("""
                    UPDATE orders SET
                        avg_fill_price = (avg_fill_price * filled_qty + $2::numeric * $3::numeric)
                                         / (filled_qty + $2::numeric),
                        filled_qty = filled_qty + $2::numeric,
                        status = CASE WHEN status IN ('filled', 'canceled', 'rejected') THEN status
                                      WHEN filled_qty + $2::numeric >= qty THEN 'filled'
                                      ELSE 'partially_filled' END,
                        updated_at = now()
                    WHERE client_order_id = $1""", fill.client_order_id, fill.qty, fill.price)
                row = await conn.fetchrow("""
                    SELECT qty, avg_price, realized_pnl FROM positions WHERE session = $1 AND symbol = $2
                    FOR UPDATE""", self.session, fill.symbol)
                position = Position(fill.symbol)
                if row is not None:
                    position = Position(fill.symbol, _f(row["qty"]), _f(row["avg_price"]), _f(row["realized_pnl"]))
                position.apply(fill)
                await conn.execute("""
                    INSERT INTO positions (session, symbol, qty, avg_price, realized_pnl, updated_at)
                    VALUES ($1, $2, $3, $4, $5, now())
                    ON CONFLICT (session, symbol) DO UPDATE SET qty = EXCLUDED.qty, avg_price = EXCLUDED.avg_price,
                        realized_pnl = EXCLUDED.realized_pnl, updated_at = now()""",
                    self.session, fill.symbol, position.qty, position.avg_price, position.realized_pnl)
                applied.append(fill)
            await conn.execute("""
                INSERT INTO broker_cursors (session, broker, cursor) VALUES ($1, $2, $3)
                ON CONFLICT (session, broker) DO UPDATE SET cursor = GREATEST(broker_cursors.cursor, EXCLUDED.cursor),
                    updated_at = now()""", self.session, broker, cursor)
        return applied

    async def positions(self) -> dict[str, Position]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT symbol, qty, avg_price, realized_pnl FROM positions WHERE session = $1",
                                    self.session)
        return {r["symbol"]: Position(r["symbol"], _f(r["qty"]), _f(r["avg_price"]), _f(r["realized_pnl"]))
                for r in rows}

    async def fills(self, since: dt.datetime | None = None) -> list[Fill]:
        """The session's fills (recorded at or after ``since``, if given), oldest first."""
        async with self._conn() as conn:
            rows = await conn.fetch("""
                SELECT * FROM fills WHERE session = $1 AND ($2::timestamptz IS NULL OR created_at >= $2)
                ORDER BY ts, fill_id""", self.session, since)
        return [Fill(client_order_id=r["client_order_id"], symbol=r["symbol"], side=Side(r["side"]),
                     qty=_f(r["qty"]), price=_f(r["price"]), ts=r["ts"].timestamp(), fill_id=r["fill_id"])
                for r in rows]

    # ------------------------------------------------------------ rejections, risk, P&L, transitions

    async def record_rejection(self, *, signal_id: str, client_order_id: str, symbol: str, side: str, qty: float,
                               limit_price: float | None, reason: str) -> bool:
        """Journal a pre-trade rejection (idempotent per client_order_id). True if written now."""
        async with self._conn() as conn:
            value = await conn.fetchval("""
                INSERT INTO rejections (session, signal_id, client_order_id, symbol, side, qty, limit_price, reason)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (session, client_order_id) DO NOTHING RETURNING id""",
                self.session, signal_id, client_order_id, symbol, side, qty, limit_price, reason)
        return value is not None

    async def rejections(self) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM rejections WHERE session = $1 ORDER BY id", self.session)
        return [dict(r) for r in rows]

    async def record_risk_event(self, *, rule: str, action: str, value: float, threshold: float,
                                message: str = "") -> None:
        async with self._conn() as conn:
            await conn.execute("""
                INSERT INTO risk_events (session, rule, action, value, threshold, message)
                VALUES ($1, $2, $3, $4, $5, $6)""", self.session, rule, action, value, threshold, message)

    async def risk_events(self) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM risk_events WHERE session = $1 ORDER BY id", self.session)
        return [dict(r) for r in rows]

    async def record_pnl(self, snap: PnlSnapshot) -> None:
        async with self._conn() as conn:
            await conn.execute("""
                INSERT INTO pnl_snapshots (session, at, equity, realized_pnl, unrealized_pnl, daily_pnl_pct,
                                           drawdown_pct, exposure)
                VALUES ($1, COALESCE($2, now()), $3, $4, $5, $6, $7, $8)""",
                self.session, snap.at, snap.equity, snap.realized_pnl, snap.unrealized_pnl, snap.daily_pnl_pct,
                snap.drawdown_pct, snap.exposure)

    async def pnl_snapshots(self, since: dt.datetime | None = None) -> list[PnlSnapshot]:
        async with self._conn() as conn:
            rows = await conn.fetch("""
                SELECT * FROM pnl_snapshots WHERE session = $1 AND ($2::timestamptz IS NULL OR at >= $2)
                ORDER BY at, id""", self.session, since)
        return [PnlSnapshot(equity=_f(r["equity"]), realized_pnl=_f(r["realized_pnl"]),
                            unrealized_pnl=_f(r["unrealized_pnl"]), daily_pnl_pct=r["daily_pnl_pct"],
                            drawdown_pct=r["drawdown_pct"], exposure=_f(r["exposure"]), at=r["at"]) for r in rows]

    async def record_transition(self, from_phase: str | None, to_phase: str, reason: str = "",
                                at: dt.datetime | None = None) -> None:
        async with self._conn() as conn:
            await conn.execute("""
                INSERT INTO session_transitions (session, at, from_phase, to_phase, reason)
                VALUES ($1, COALESCE($2, now()), $3, $4, $5)""", self.session, at, from_phase, to_phase, reason)

    async def last_transition_at(self) -> dt.datetime | None:
        async with self._conn() as conn:
            value: dt.datetime | None = await conn.fetchval(
                "SELECT max(at) FROM session_transitions WHERE session = $1", self.session)
        return value

    async def counts(self, since: dt.datetime | None = None) -> Counts:
        """Orders, fills and rejections (created at or after ``since``, if given) and orders open now."""
        async with self._conn() as conn:
            row = await conn.fetchrow("""
                SELECT (SELECT count(*) FROM orders WHERE session = $1
                          AND ($2::timestamptz IS NULL OR created_at >= $2)) AS orders,
                       (SELECT count(*) FROM fills WHERE session = $1
                          AND ($2::timestamptz IS NULL OR created_at >= $2)) AS fills,
                       (SELECT count(*) FROM rejections WHERE session = $1
                          AND ($2::timestamptz IS NULL OR at >= $2)) AS rejected,
                       (SELECT count(*) FROM orders WHERE session = $1
                          AND status IN ('new', 'accepted', 'partially_filled')) AS open_orders""",
                self.session, since)
        assert row is not None
        return Counts(orders=row["orders"], fills=row["fills"], rejected=row["rejected"],
                      open_orders=row["open_orders"])

    # ------------------------------------------------------------ the daily report

    async def report_rows(self, since: dt.datetime | None = None
                          ) -> tuple[list[report_mod.OrderRow], list[report_mod.RejectionRow]]:
        """The orders and pre-trade rejections created at or after ``since`` (the session day), oldest first."""
        async with self._conn() as conn:
            orders = await conn.fetch("""
                SELECT client_order_id, signal_id, symbol, status FROM orders
                WHERE session = $1 AND ($2::timestamptz IS NULL OR created_at >= $2)
                ORDER BY created_at, client_order_id""", self.session, since)
            rejections = await conn.fetch("""
                SELECT signal_id, symbol, reason FROM rejections
                WHERE session = $1 AND ($2::timestamptz IS NULL OR at >= $2) ORDER BY id""", self.session, since)
        return ([report_mod.OrderRow(r["client_order_id"], r["signal_id"], r["symbol"], r["status"]) for r in orders],
                [report_mod.RejectionRow(r["signal_id"], r["symbol"], r["reason"]) for r in rejections])

    async def record_daily_report(self, day: dt.date, report: dict[str, Any], *, final: bool) -> None:
        """Write the day's report (one row per session day; a final report is not replaced by a later
        intraday one)."""
        async with self._conn() as conn:
            await conn.execute("""
                INSERT INTO daily_reports (session, day, final, report) VALUES ($1, $2, $3, $4::jsonb)
                ON CONFLICT (session, day) DO UPDATE SET report = EXCLUDED.report, final = EXCLUDED.final,
                    updated_at = now()
                WHERE NOT daily_reports.final OR EXCLUDED.final""", self.session, day, final, json.dumps(report))

    async def daily_report(self, day: dt.date) -> tuple[dict[str, Any], bool] | None:
        """(the report, final?) of ``day``, if one was written."""
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT report, final FROM daily_reports WHERE session = $1 AND day = $2",
                                      self.session, day)
        return (json.loads(row["report"]), bool(row["final"])) if row else None

    # ------------------------------------------------------------ end-of-day reconciliation

    async def fills_at_or_after(self, since: dt.datetime) -> list[Fill]:
        """The session's fills whose broker time (``ts``) is at or after ``since``, oldest first."""
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM fills WHERE session = $1 AND ts >= $2 ORDER BY ts, fill_id",
                                    self.session, since)
        return [Fill(client_order_id=r["client_order_id"], symbol=r["symbol"], side=Side(r["side"]),
                     qty=_f(r["qty"]), price=_f(r["price"]), ts=r["ts"].timestamp(), fill_id=r["fill_id"])
                for r in rows]

    async def order_ids(self) -> set[str]:
        """Every client_order_id the journal holds for the session (orders and pre-trade rejections)."""
        async with self._conn() as conn:
            rows = await conn.fetch("""
                SELECT client_order_id FROM orders WHERE session = $1
                UNION SELECT client_order_id FROM rejections WHERE session = $1""", self.session)
        return {r["client_order_id"] for r in rows}

    async def record_reconciliation(self, *, day: dt.date, trigger: str, broker: str, clean: bool, positions: int,
                                    fills: int, adopted: int, flagged: int, differences: list[dict[str, Any]],
                                    request: str | None) -> None:
        async with self._conn() as conn:
            await conn.execute("""
                INSERT INTO reconciliations (session, day, trigger, broker, clean, positions, fills, adopted,
                                             flagged, differences, request)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)""",
                self.session, day, trigger, broker, clean, positions, fills, adopted, flagged,
                json.dumps(differences), request)

    async def reconciliations(self, day: dt.date | None = None) -> list[dict[str, Any]]:
        """The session's reconciliations (of ``day``, if given), oldest first; differences decoded."""
        async with self._conn() as conn:
            rows = await conn.fetch("""
                SELECT * FROM reconciliations WHERE session = $1 AND ($2::date IS NULL OR day = $2)
                ORDER BY id""", self.session, day)
        return [{**dict(r), "differences": json.loads(r["differences"])} for r in rows]

    # ------------------------------------------------------------ retention

    async def retain_snapshots(self, *, downsample_before: dt.datetime | None, bucket_seconds: int,
                               delete_before: dt.datetime | None) -> tuple[int, int]:
        """Apply the P&L snapshot retention; returns (rows downsampled away, rows deleted).

        Rows recorded before ``delete_before`` are deleted; of the rows before ``downsample_before``,
        each ``bucket_seconds`` bucket (aligned to the Unix epoch) keeps only its last row. Every row
        removed moves to ``pnl_snapshots_archive`` in the same transaction, where it stays until a
        journal backup holds it (``journal.archive.release``). Idempotent.
        """
        downsampled = deleted = 0
        async with self._conn() as conn, conn.transaction():
            if delete_before is not None:
                deleted = await conn.fetchval(f"""
                    WITH removed AS (DELETE FROM pnl_snapshots WHERE session = $1 AND at < $2 RETURNING *)
                    {_ARCHIVE.format(removed="deleted")}""", self.session, delete_before)
            if downsample_before is not None:
                downsampled = await conn.fetchval(f"""
                    WITH removed AS (
                        DELETE FROM pnl_snapshots p USING (
                            SELECT id, row_number() OVER (PARTITION BY floor(extract(epoch FROM at) / $3)
                                                          ORDER BY at DESC, id DESC) AS rn
                            FROM pnl_snapshots WHERE session = $1 AND at < $2) old
                        WHERE p.id = old.id AND old.rn > 1 RETURNING p.*)
                    {_ARCHIVE.format(removed="downsampled")}""", self.session, downsample_before,
                    float(bucket_seconds))
        return int(downsampled or 0), int(deleted or 0)

    async def archived_snapshots(self) -> list[dict[str, Any]]:
        """The session's archived P&L snapshots (removed by retention, not yet released by a backup)."""
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM pnl_snapshots_archive WHERE session = $1 ORDER BY at, id",
                                    self.session)
        return [dict(r) for r in rows]


#: Moves the rows of a ``removed`` CTE into the archive and counts them (one statement, one transaction).
_ARCHIVE = """, archived AS (
                        INSERT INTO pnl_snapshots_archive (id, session, at, equity, realized_pnl, unrealized_pnl,
                                                           daily_pnl_pct, drawdown_pct, exposure, removed)
                        SELECT id, session, at, equity, realized_pnl, unrealized_pnl, daily_pnl_pct, drawdown_pct,
                               exposure, '{removed}' FROM removed
                        ON CONFLICT (id) DO NOTHING RETURNING 1)
                    SELECT count(*) FROM removed"""
