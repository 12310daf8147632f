"""The whole platform on one machine: control plane, Redis, PostgreSQL, CRDs, operator, local runtime.

Used by ``make demo`` and by the end-to-end test, with the same code, so
the test exercises exactly what a newcomer runs. ``LocalPlatform`` is a
context manager; leaving it stops everything it started, by pid, in
reverse order, and removes its temporary directories.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from types import TracebackType

import asyncpg  # noqa: F401 - imported here so a missing dependency fails before anything starts

from trading_dev import procs, services
from trading_dev import runtime as local_runtime
from trading_dev.controlplane import server

ROOT = pathlib.Path(__file__).resolve().parents[2]


class PlatformError(RuntimeError):
    """A part of the local platform could not be started."""


class LocalPlatform:
    def __init__(self, workdir: pathlib.Path, kubeconfig_out: pathlib.Path | None = None,
                 operator_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.kubeconfig_out = kubeconfig_out
        self.operator_env = operator_env or {}
        self.cp: server.ControlPlane | None = None
        self.redis: services.RedisServer | None = None
        self.postgres: services.PostgresServer | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.runtime: local_runtime.LocalRuntime | None = None
        self._dirs: list[pathlib.Path] = []

    @property
    def kubeconfig(self) -> pathlib.Path:
        assert self.cp is not None
        return self.cp.kubeconfig_path

    @property
    def logs(self) -> pathlib.Path:
        return self.workdir / "logs"

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise PlatformError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    # ------------------------------------------------------------------ start

    def __enter__(self) -> LocalPlatform:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cp = server.ControlPlane(workdir=self._tmp("cp")).start()
        if self.kubeconfig_out is not None:
            self.kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.cp.kubeconfig_path, self.kubeconfig_out)
        self.redis = services.RedisServer(self._tmp("redis")).start()
        self.postgres = services.PostgresServer(self._tmp("pg")).init().start()
        self.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        for crd in sorted((ROOT / "crds").glob("*.yaml")):
            self.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(crd))
        self._start_operator()
        self.runtime = local_runtime.LocalRuntime(self.kubeconfig, self.workdir / "runtime").start()

    def _tmp(self, prefix: str) -> pathlib.Path:
        path = services.server_dir(prefix)
        self._dirs.append(path)
        return path

    def _start_operator(self) -> None:
        assert self.redis is not None and self.postgres is not None
        cli = pathlib.Path(sys.executable).with_name("trading-platform")
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig),
                   TRADING_WORKER_COMMAND=json.dumps([str(cli)]),
                   TRADING_REDIS_URL=self.redis.url, TRADING_JOURNAL_DSN=self.postgres.dsn,
                   TRADING_METRICS_PORT=str(server.free_port()), TRADING_LIVENESS_PORT=str(server.free_port()),
                   TRADING_LEASE_NAMESPACE="default", TRADING_RECONCILE_INTERVAL="1")
        env.update(self.operator_env)
        with open(self.logs / "operator.log", "wb") as log:
            self.operator = subprocess.Popen([sys.executable, "-m", "trading_operator"], env=env, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.operator.poll() is not None:
                raise PlatformError(f"operator exited with {self.operator.returncode}; see {self.logs / 'operator.log'}")
            proc = subprocess.run(["kubectl", f"--kubeconfig={self.kubeconfig}", "get", "lease", "trading-operator",
                                   "-n", "default", "-o", "jsonpath={.spec.holderIdentity}"],
                                  capture_output=True, text=True)
            if proc.returncode == 0 and proc.stdout:
                time.sleep(1.0)
                return
            time.sleep(0.3)
        raise PlatformError("operator did not take its lease within 30s")

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        # Workers first (they flush to the journal on SIGTERM), then the operator, then the servers.
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None
        procs.stop_group(self.operator, grace=15)
        for part in (self.postgres, self.redis):
            if part is not None:
                part.stop()
        if self.cp is not None:
            self.cp.stop()
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._dirs.clear()
