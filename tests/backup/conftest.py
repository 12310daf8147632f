"""Fixtures for the backup tests: real PostgreSQL and Redis (tests/fixtures), the real control plane.

Each test gets its own journal database on the shared PostgreSQL server
(``journal_db``), so whole-database counts and checksums belong to that
test alone; its own namespace, session and Backup; and a destination
directory standing in for the PVC. The backup commands run as the Job
runs them: ``python -m trading_workers.cli backup ...`` in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from kubernetes import client

from tests.fixtures.api import Api, G, V
from tests.fixtures.operator import operator_fixture
from tests.fixtures.servers import PostgresServer, RedisServer
from trading_workers.backup import postgres as pg
from trading_workers.domain import Fill, Order, OrderStatus, OrderType, Side
from trading_workers.journal import Journal, PnlSnapshot

SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG"]


@pytest.fixture
async def journal_db(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty journal database for this test; yields its DSN."""
    name = f"bk_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield pg.with_database(postgres_server.dsn, name)
    admin = await asyncpg.connect(postgres_server.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed_journal(dsn: str, session: str, orders: int, *, prefix: str = "") -> None:
    """``orders`` orders (about half filled, some canceled), fills, positions, P&L, risk events, transitions, rejections."""
    journal = await Journal.open(dsn, session, max_size=4)
    try:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            async with sem:
                side = Side.BUY if i % 3 else Side.SELL
                limit = 100.0 + (i % 50) * 0.25 if i % 2 else None
                order = Order(client_order_id=f"{prefix}o-{i:06d}", symbol=SYMBOLS[i % len(SYMBOLS)], side=side,
                              qty=float(1 + i % 7), order_type=OrderType.LIMIT if limit else OrderType.MARKET,
                              limit_price=limit)
                await journal.record_new_order(order, signal_id=f"sig-{i}")
                if i % 5 == 4:
                    await journal.update_order(order.client_order_id, OrderStatus.CANCELED)
                else:
                    await journal.update_order(order.client_order_id, OrderStatus.ACCEPTED, broker_order_id=f"b-{i}")

        await asyncio.gather(*(one(i) for i in range(orders)))
        fills = [Fill(client_order_id=f"{prefix}o-{i:06d}", symbol=SYMBOLS[i % len(SYMBOLS)],
                      side=Side.BUY if i % 3 else Side.SELL, qty=float(1 + i % 7), price=100.0 + (i % 40) * 0.5,
                      ts=1_767_000_000.0 + i, fill_id=f"{prefix}f-{i:06d}")
                 for i in range(orders) if i % 2 == 0 and i % 5 != 4]
        for start in range(0, len(fills), 250):
            await journal.record_fills(fills[start:start + 250], broker="simulated", cursor=start + 250)
        for i in range(50):
            await journal.record_pnl(PnlSnapshot(equity=1e6 + i, realized_pnl=i * 10.0, unrealized_pnl=-i * 1.5,
                                                 daily_pnl_pct=0.01 * i, drawdown_pct=0.001 * i, exposure=5e5 + i))
        for i in range(10):
            await journal.record_risk_event(rule="dailyLoss", action="Alert", value=1.0 + i, threshold=2.0,
                                            message=f"event {i}")
            await journal.record_rejection(signal_id=f"rs-{i}", client_order_id=f"{prefix}r-{i}", symbol="GME",
                                           side="buy", qty=1.0, limit_price=None, reason="restricted")
        for src, dst in ((None, "Initializing"), ("Initializing", "PreMarket"), ("PreMarket", "MarketOpen")):
            await journal.record_transition(src, dst, "calendar")
    finally:
        await journal.close()


async def journal_state(dsn: str, session: str | None = None) -> dict[str, dict[str, Any]]:
    """Per-table row counts and checksums (the same function verification uses)."""
    conn = await pg.connect(dsn)
    try:
        return await pg.digests(conn, session)
    finally:
        await conn.close()


@dataclass
class Cluster:
    """The test's namespace on the real API server (through ``Api``), with helpers for sessions and Backups."""

    api: Api
    namespace: str

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.api.kubeconfig

    @property
    def custom(self) -> client.CustomObjectsApi:
        return self.api.custom

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.api.create(self.namespace, plural, body)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self.api.get(self.namespace, plural, name)

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.api.patch(self.namespace, plural, name, body)

    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.api.patch_status(self.namespace, plural, name, status)

    def session(self, name: str = "s", phases: tuple[str, ...] = ("Initializing", "PreMarket", "MarketOpen"),
                **spec: Any) -> str:
        """A RiskPolicy and a TradingSession walked through ``phases``; returns ``namespace/name``."""
        self.create("riskpolicies", {"apiVersion": f"{G}/{V}", "kind": "RiskPolicy", "metadata": {"name": "limits"},
                                     "spec": {"mode": "Active"}})
        self.create("tradingsessions", {"apiVersion": f"{G}/{V}", "kind": "TradingSession", "metadata": {"name": name},
                                        "spec": {"symbols": SYMBOLS, "riskPolicyRef": {"name": "limits"}, **spec}})
        for phase in phases:
            self.patch_status("tradingsessions", name, {"phase": phase})
        return f"{self.namespace}/{name}"

    def backup(self, name: str, session: str = "s", **spec: Any) -> dict[str, Any]:
        body = {"sessionRef": {"name": session}, "destination": {"pvc": {"claimName": "backups", "path": "/"}}}
        body.update(spec)
        return self.create("backups", {"apiVersion": f"{G}/{V}", "kind": "Backup", "metadata": {"name": name},
                                       "spec": body})

    def status(self, name: str) -> dict[str, Any]:
        return self.get("backups", name).get("status") or {}

    def events(self, name: str) -> list[str]:
        return [str(e.reason) for e in self.api.events(self.namespace, name)]


@pytest.fixture
def cluster(api: Api, namespace: str) -> Cluster:
    return Cluster(api, namespace)


@pytest.fixture
def backup_cli(cluster: Cluster, journal_db: str, redis_server: RedisServer,
               tmp_path: pathlib.Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``trading-platform backup <args>`` as the backup Job would, against this test's journal and Redis."""
    destination = tmp_path / "backups"

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "TRADING_JOURNAL_DSN": journal_db,
                    "TRADING_REDIS_URL": redis_server.url, "TRADING_BACKUP_ROOT": str(destination),
                    "TRADING_BACKUP_LOCATION": "pvc://backups", "PYTHONUNBUFFERED": "1", **(env or {})}
        return subprocess.run([sys.executable, "-m", "trading_workers.cli", "backup", *args], env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    run.destination = destination  # type: ignore[attr-defined]
    return run


operator = operator_fixture()
