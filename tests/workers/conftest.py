"""Fixtures for the worker tests: sessions on the real API server, real worker processes.

Real Redis and PostgreSQL come from the fixtures plugin (``tests.fixtures.servers``): shared servers
serve most tests, and each test uses its own session name, so keys, streams and journal rows never
collide; tests that stop a server get their own (``own_redis``, ``own_postgres``).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from kubernetes import client

from tests.fixtures.api import Api, G, V
from tests.fixtures.builders import DEFAULT_POLICY
from tests.fixtures.faults import FaultProxy, kubeconfig_via, to_api_server
from tests.fixtures.servers import PostgresServer, RedisServer, free_port
from tests.workers.flow import Flow
from trading_operator.api.session import TradingSession
from trading_operator.api.workerconfig import WorkerConfig
from trading_workers.bus import session_prefix
from trading_workers.journal import Journal


@pytest.fixture
def session_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def journal(postgres_server: PostgresServer, session_name: str) -> AsyncIterator[Journal]:
    j = await Journal.open(postgres_server.dsn, f"test/{session_name}")
    try:
        yield j
    finally:
        await j.close()


# --------------------------------------------------------------------------- cluster + worker processes


@dataclass
class SessionHandle:
    """A real TradingSession (and its RiskPolicy) on the test API server."""

    custom: client.CustomObjectsApi
    namespace: str
    name: str
    uid: str
    config_path: pathlib.Path
    config: WorkerConfig

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def prefix(self) -> str:
        return session_prefix(self.namespace, self.name)

    def get(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.get_namespaced_custom_object(
            G, V, self.namespace, "tradingsessions", self.name))

    def status(self) -> dict[str, Any]:
        return self.get().get("status") or {}

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(G, V, self.namespace, "tradingsessions", self.name,
                                                   {"spec": spec})

    def patch_status(self, status: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.patch_namespaced_custom_object_status(
            G, V, self.namespace, "tradingsessions", self.name, {"status": status}))

    def patch_policy(self, spec: dict[str, Any]) -> int:
        obj = cast(dict[str, Any], self.custom.patch_namespaced_custom_object(
            G, V, self.namespace, "riskpolicies", self.config.risk_policy_name, {"spec": spec}))
        return int(obj["metadata"]["generation"])


@pytest.fixture
def custom_api(api: Api) -> client.CustomObjectsApi:
    return api.custom


@pytest.fixture
def make_session(custom_api: client.CustomObjectsApi, namespace: str, session_name: str,
                 tmp_path: pathlib.Path) -> Callable[..., SessionHandle]:
    """Create a RiskPolicy and a TradingSession, walk it to MarketOpen (no operator runs here), write its config."""

    def make(*, symbols: list[str] | None = None, policy: dict[str, Any] | None = None,
             spec: dict[str, Any] | None = None, phase: str = "MarketOpen") -> SessionHandle:
        policy_name = "limits"
        custom_api.create_namespaced_custom_object(G, V, namespace, "riskpolicies", {
            "apiVersion": f"{G}/{V}", "kind": "RiskPolicy", "metadata": {"name": policy_name},
            "spec": policy if policy is not None else DEFAULT_POLICY})
        body = {"apiVersion": f"{G}/{V}", "kind": "TradingSession", "metadata": {"name": session_name},
                "spec": {"symbols": symbols or ["AAPL", "MSFT", "NVDA"], "riskPolicyRef": {"name": policy_name},
                         **(spec or {})}}
        custom_api.create_namespaced_custom_object(G, V, namespace, "tradingsessions", body)
        path = {"Initializing": ["Initializing"], "PreMarket": ["Initializing", "PreMarket"],
                "MarketOpen": ["Initializing", "PreMarket", "MarketOpen"]}[phase]
        for step in path:
            custom_api.patch_namespaced_custom_object_status(G, V, namespace, "tradingsessions",
                                                             session_name, {"status": {"phase": step}})
        obj = cast(dict[str, Any], custom_api.get_namespaced_custom_object(
            G, V, namespace, "tradingsessions", session_name))
        config = WorkerConfig.from_session(TradingSession.model_validate(obj))
        config_path = tmp_path / f"{session_name}-config.json"
        config_path.write_text(config.to_json())
        return SessionHandle(custom_api, namespace, session_name, obj["metadata"]["uid"], config_path, config)

    return make


@dataclass
class WorkerProc:
    """One worker process (``trading-platform worker <role>``), stopped by its pid."""

    role: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: pathlib.Path

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def not_ready(self) -> bool:
        return self.get("/readyz")[0] == 503

    def metric(self, name: str, **labels: str) -> float:
        """Value of one sample from /metrics (0 if absent)."""
        status, text = self.get("/metrics")
        assert status == 200, text
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


class Workers:
    """Starts worker processes for a session; the fixture stops every one of them by pid."""

    def __init__(self, tmp: pathlib.Path, kubeconfig: pathlib.Path) -> None:
        self.tmp, self.kubeconfig = tmp, kubeconfig
        self.procs: list[WorkerProc] = []

    def start(self, role: str, session: SessionHandle, *, redis_url: str, journal_dsn: str,
              env: dict[str, str] | None = None, config_file: bool = True) -> WorkerProc:
        port = free_port()
        log_path = self.tmp / f"{role}-{len(self.procs)}.log"
        full_env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "TRADING_REDIS_URL": redis_url,
                    "TRADING_JOURNAL_DSN": journal_dsn, "TRADING_HTTP_PORT": str(port),
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        if config_file:
            full_env["TRADING_CONFIG"] = str(session.config_path)
        else:
            full_env.pop("TRADING_CONFIG", None)
        with open(log_path, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "trading_workers.cli", "worker", role,
                                     "--session", session.key], env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        worker = WorkerProc(role, proc, port, log_path)
        self.procs.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in reversed(self.procs):
            code = worker.terminate()
            # Captured by pytest and shown only when the test failed.
            print(f"----- {worker.role} (pid {worker.proc.pid}, exit {code}) log tail -----\n{worker.logs()[-6000:]}")


@pytest.fixture
async def flows() -> AsyncIterator[list[Flow]]:
    """Flows opened by the test (``Flow`` objects), closed at teardown."""
    made: list[Flow] = []
    yield made
    for flow in made:
        await flow.close()


@pytest.fixture
def workers(control_plane: Any, tmp_path: pathlib.Path) -> Iterator[Workers]:
    pool = Workers(tmp_path, control_plane.kubeconfig_path)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def apiserver_proxy(control_plane: Any, tmp_path: pathlib.Path) -> Iterator[tuple[FaultProxy, pathlib.Path]]:
    """A proxy in front of the API server and a kubeconfig that goes through it."""
    proxy = to_api_server(control_plane)
    try:
        yield proxy, kubeconfig_via(control_plane, proxy.port, tmp_path / "kubeconfig-via-proxy")
    finally:
        proxy.stop()
