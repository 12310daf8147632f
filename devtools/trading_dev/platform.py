"""The whole platform on one machine: control plane, Redis, PostgreSQL, S3 (versitygw), CRDs, operator, local runtime.

Used by ``make demo`` and by the end-to-end test, with the same code, so
the test exercises exactly what a newcomer runs. ``LocalPlatform`` is a
context manager; leaving it stops everything it started, by pid, in
reverse order, and removes its temporary directories.

The operator runs under a supervisor (``Supervised``), as a Deployment's
pod runs under the kubelet: whenever it exits (a crash, a SIGKILL, or its
own exit after it could not renew its Lease during an API-server outage)
it is started again after a short backoff. Without one the demo ran on
without an operator after any outage longer than the lease (issue 20).
``operator_replicas=2`` runs a leader and a standby, each supervised.
"""

from __future__ import annotations

import abc
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import asyncpg  # noqa: F401 - imported here so a missing dependency fails before anything starts

from trading_dev import kubeconfig, procs, services
from trading_dev import runtime as local_runtime
from trading_dev.controlplane import server

ROOT = pathlib.Path(__file__).resolve().parents[2]


S3_BUCKETS = ("trading-models", "trading-backups")   # created in the local object store at start


class PlatformError(RuntimeError):
    """A part of the local platform could not be started."""


class Platform(abc.ABC):
    """A running platform, whichever runtime runs its pods, as the demo's story drives it:
    ``LocalPlatform`` (the process runtime) and ``trading_dev.cluster.platform.ClusterPlatform`` (the
    chart on the real node).

    Both share ``kubectl`` against the platform's kubeconfig, and a context manager that starts on entry
    (stopping what did start if the start fails) and stops on exit. A runtime says how to start and
    stop, where its kubeconfig is, which kubectl it runs, the namespace the story's objects go to, and
    where its trade journal and its logs are."""

    kubectl_timeout = 60.0
    namespace: str  # where the story's RiskPolicy, TradingSession and Backup go

    @property
    @abc.abstractmethod
    def kubeconfig(self) -> pathlib.Path: ...

    @property
    @abc.abstractmethod
    def journal_dsn(self) -> str:
        """The trade journal, reachable from this machine."""

    @property
    @abc.abstractmethod
    def logs_hint(self) -> str:
        """Where to look when something times out."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def kubectl_binary(self) -> str:
        return "kubectl"

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.kubectl_binary(), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=self.kubectl_timeout)
        if proc.returncode != 0:
            raise PlatformError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()


@dataclass
class Supervised:
    """A process restarted whenever it exits, with a backoff (a pod's ``restartPolicy: Always``).

    The backoff doubles from ``min_backoff`` to ``max_backoff`` while the process keeps exiting
    early, and starts over once it has run ``stable_after`` seconds. ``exits`` records each exit
    (monotonic time, return code); ``restarts`` counts the restarts.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: pathlib.Path
    min_backoff: float = 0.5
    max_backoff: float = 8.0
    stable_after: float = 30.0
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    exits: list[tuple[float, int]] = field(default_factory=list)
    started_at: float = 0.0
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> Supervised:
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            self.started_at = time.monotonic()

    def _watch(self) -> None:
        backoff = self.min_backoff
        while not self._stopping.is_set():
            proc = self.proc
            assert proc is not None
            code = proc.wait()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            self.exits.append((now, code))
            backoff = self.min_backoff if now - self.started_at >= self.stable_after else backoff
            if self._stopping.wait(backoff):
                return
            backoff = min(self.max_backoff, backoff * 2)
            self._spawn()
            self.restarts += 1

    def stop(self, grace: float = 15.0) -> None:
        self._stopping.set()
        with self._lock:
            procs.stop_group(self.proc, grace=grace)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_running(self, since_exits: int, timeout: float) -> int:
        """Wait until the process has exited more than ``since_exits`` times and runs again; its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.proc
            if len(self.exits) > since_exits and proc is not None and proc.poll() is None and \
                    self.started_at > self.exits[-1][0]:
                return proc.pid
            time.sleep(0.05)
        raise PlatformError(f"{self.name} was not restarted within {timeout}s")


class LocalPlatform(Platform):
    def __init__(self, workdir: pathlib.Path, kubeconfig_out: pathlib.Path | None = None,
                 operator_env: dict[str, str] | None = None, operator_replicas: int = 1,
                 operator_kubeconfig: Callable[[int], pathlib.Path | None] | None = None) -> None:
        """``operator_kubeconfig(i)``: another kubeconfig for replica ``i`` (a drill's proxy), or None."""
        self.workdir = workdir
        self.kubeconfig_out = kubeconfig_out
        self._published: bytes | None = None
        self.operator_env = operator_env or {}
        self.operator_replicas = operator_replicas
        self.operator_kubeconfig = operator_kubeconfig
        self.cp: server.ControlPlane | None = None
        self.redis: services.RedisServer | None = None
        self.postgres: services.PostgresServer | None = None
        self.s3: services.ObjectStoreServer | None = None
        self.operators: list[Supervised] = []
        self.runtime: local_runtime.LocalRuntime | None = None
        self._dirs: list[pathlib.Path] = []

    @property
    def operator(self) -> subprocess.Popen[bytes] | None:
        """The first operator replica's current process."""
        return self.operators[0].proc if self.operators else None

    @property
    def kubeconfig(self) -> pathlib.Path:
        assert self.cp is not None
        return self.cp.kubeconfig_path

    @property
    def logs(self) -> pathlib.Path:
        return self.workdir / "logs"

    namespace = "default"

    @property
    def journal_dsn(self) -> str:
        return self.postgres.dsn if self.postgres else ""

    @property
    def logs_hint(self) -> str:
        return f"logs in {self.logs} and {self.workdir / 'runtime'}"

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cp = server.ControlPlane(workdir=self._tmp("cp")).start()
        if self.kubeconfig_out is not None:
            self._published = kubeconfig.publish(self.cp.kubeconfig_path, self.kubeconfig_out)
        self.redis = services.RedisServer(self._tmp("redis")).start()
        self.postgres = services.PostgresServer(self._tmp("pg")).init().start()
        self.s3 = services.ObjectStoreServer(self._tmp("s3")).start()
        for bucket in S3_BUCKETS:
            self.s3.create_bucket(bucket)
        self.s3_env_file.write_text("".join(f"{k}={v}\n" for k, v in self.s3.env.items()))
        self.s3_env_file.chmod(0o600)
        self.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        for crd in sorted((ROOT / "crds").glob("*.yaml")):
            self.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(crd))
        self._start_operator()
        self.runtime = local_runtime.LocalRuntime(self.kubeconfig, self.workdir / "runtime").start()

    @property
    def s3_env_file(self) -> pathlib.Path:
        """The object store's endpoint, region and keys as ``KEY=value`` lines (``kubectl create secret
        generic trading-s3 --from-env-file=...`` makes the Secret a Backup or a model's ``s3`` names)."""
        return self.workdir / "s3.env"

    def _tmp(self, prefix: str) -> pathlib.Path:
        path = services.server_dir(prefix)
        self._dirs.append(path)
        return path

    def _start_operator(self) -> None:
        assert self.redis is not None and self.postgres is not None
        cli = pathlib.Path(sys.executable).with_name("trading-platform")
        for i in range(self.operator_replicas):
            kubeconfig = (self.operator_kubeconfig(i) if self.operator_kubeconfig else None) or self.kubeconfig
            env = dict(os.environ, KUBECONFIG=str(kubeconfig),
                       TRADING_WORKER_COMMAND=json.dumps([str(cli)]),
                       TRADING_REDIS_URL=self.redis.url, TRADING_JOURNAL_DSN=self.postgres.dsn,
                       TRADING_METRICS_PORT=str(server.free_port()), TRADING_LIVENESS_PORT=str(server.free_port()),
                       TRADING_LEASE_NAMESPACE="default", TRADING_RECONCILE_INTERVAL="1")
            env.update(self.operator_env)
            log = self.logs / ("operator.log" if i == 0 else f"operator-{i}.log")
            log.write_bytes(b"")
            self.operators.append(Supervised(f"operator-{i}", [sys.executable, "-m", "trading_operator"], env,
                                             log).start())
        first = self.operators[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if first.exits:
                raise PlatformError(f"operator exited with {first.exits[0][1]}; see {self.logs / 'operator.log'}")
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
        for replica in self.operators:
            replica.stop(grace=15)
        self.operators.clear()
        for part in (self.s3, self.postgres, self.redis):
            if part is not None:
                part.stop()
        self.s3_env_file.unlink(missing_ok=True)
        if self.kubeconfig_out is not None and self._published is not None:
            kubeconfig.unpublish(self.kubeconfig_out, self._published)
        if self.cp is not None:
            self.cp.stop()
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._dirs.clear()


def main(argv: list[str] | None = None) -> int:
    """``python -m trading_dev.platform``: a library; say which commands run it."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m trading_dev.platform", description=__doc__.splitlines()[0],
        epilog="This module is the library behind `make up` (python -m trading_dev.up: the platform, kept up "
               "until Ctrl-C or `make down`) and `make demo` (python -m trading_dev.demo); run one of those.")
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
