"""Real Redis, PostgreSQL and S3-compatible (versitygw) servers, started and stopped by pid (the tests and the demo share them).

Each server runs in its own temporary directory on a free loopback port.
A server that cannot start raises ``ServerError`` with its log tail: the
test fails loudly, nothing is skipped. PostgreSQL refuses to run as root,
so when the tests run as root the cluster is created and run as the
``postgres`` system user (the Debian package creates it). The object store is
versitygw's POSIX backend over the server's directory (built by
``hack/install-versitygw.sh``; docs/decisions/0012-object-store-versitygw-obstore.md).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pathlib
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from trading_dev.controlplane.server import free_port

START_TIMEOUT = 30.0


class ServerError(RuntimeError):
    """A test server could not be started."""


def _tail(path: pathlib.Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def _stop_pid(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class RedisServer:
    """redis-server with an append-only file (fsync always), so a restart keeps every write."""

    workdir: pathlib.Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise ServerError("redis-server not found (make sysdeps installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "redis.log"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
             "--daemonize", "no", "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"redis-server exited with {self.proc.returncode}:\n{_tail(log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"redis-server not ready after {START_TIMEOUT:.0f}s:\n{_tail(log)}")

    def stop(self) -> None:
        _stop_pid(self.proc, signal.SIGTERM)

    def kill(self) -> None:
        _stop_pid(self.proc, signal.SIGKILL)


def _pg_bindir() -> pathlib.Path:
    env = os.environ.get("TRADING_PG_BIN")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                          key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "postgres").exists():
            return pathlib.Path(candidate)
    which = shutil.which("postgres")
    if which:
        return pathlib.Path(which).parent
    raise ServerError("PostgreSQL server binaries not found (make sysdeps installs them; or set TRADING_PG_BIN)")


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL cluster (initdb) run by its postmaster pid."""

    workdir: pathlib.Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _user: str | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_user(self) -> dict[str, object]:
        return {"user": self._user, "group": pwd.getpwnam(self._user).pw_gid} if self._user else {}

    def init(self) -> PostgresServer:
        bindir = _pg_bindir()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._user = "postgres"
            try:
                entry = pwd.getpwnam(self._user)
            except KeyError as exc:
                raise ServerError("running as root and there is no 'postgres' user to run PostgreSQL") from exc
            os.chmod(self.workdir, 0o755)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        data = self.workdir / "data"
        proc = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
             "--no-sync", "--no-instructions"],
            capture_output=True, text=True, timeout=120, cwd=self.workdir, **self._as_user())  # type: ignore[call-overload]
        if proc.returncode != 0:
            raise ServerError(f"initdb failed:\n{proc.stdout}\n{proc.stderr}")
        return self

    def start(self) -> PostgresServer:
        bindir = _pg_bindir()
        log = self.workdir / "postgres.log"
        logf = open(log, "ab")  # noqa: SIM115 - handed to the child
        os.chmod(log, 0o666)
        self.proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(self.workdir / "data"), "-p", str(self.port),
             "-k", str(self.workdir), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100",
             "-c", "shared_buffers=16MB"],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir,
            **self._as_user())  # type: ignore[call-overload]
        logf.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"postgres exited with {self.proc.returncode}:\n{_tail(log)}")
            ready = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                                    "-U", "postgres", "-t", "1"], capture_output=True)
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"postgres not ready after {START_TIMEOUT:.0f}s:\n{_tail(log)}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster): clients are disconnected, committed data is kept."""
        _stop_pid(self.proc, signal.SIGINT)


ROOT = pathlib.Path(__file__).resolve().parents[2]
VERSITYGW_VERSION = "v1.8.0"     # the pin of hack/install-versitygw.sh (keep the two equal)


def versitygw_binary() -> pathlib.Path:
    """The cached versitygw binary (``make deps`` builds it; ``TRADING_VERSITYGW`` names another)."""
    env = os.environ.get("TRADING_VERSITYGW")
    if env:
        return pathlib.Path(env)
    cache = pathlib.Path(os.environ.get("TRADING_DEV_CACHE")
                         or pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
                         / "trading-platform")
    binary = cache / "bin" / f"versitygw-{VERSITYGW_VERSION}"
    if binary.exists():
        return binary
    script = ROOT / "hack" / "install-versitygw.sh"
    if script.exists():      # a checkout: build it now (what make deps would have done)
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800,
                              env=dict(os.environ, VERSITYGW_VERSION=VERSITYGW_VERSION))
        if proc.returncode == 0 and binary.exists():
            return binary
        raise ServerError(f"versitygw could not be built (hack/install-versitygw.sh):\n{proc.stderr[-3000:]}")
    raise ServerError(f"versitygw not found at {binary} (make deps builds it)")


@dataclass
class ObjectStoreServer:
    """An S3-compatible server (versitygw, POSIX backend) on loopback, with a fresh root account.

    Buckets are the top-level directories of ``workdir/data`` (:meth:`create_bucket`). The access
    key and secret are random per server; clients get them as ``env`` (the variables
    ``trading_workers.objectstore`` reads).
    """

    workdir: pathlib.Path
    port: int = field(default_factory=free_port)
    access_key: str = field(default_factory=lambda: "tp" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    region: str = "us-east-1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data(self) -> pathlib.Path:
        return self.workdir / "data"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: ``TRADING_S3_ENDPOINT``, ``TRADING_S3_REGION`` and the credentials."""
        return {"TRADING_S3_ENDPOINT": self.endpoint, "TRADING_S3_REGION": self.region,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def create_bucket(self, name: str) -> str:
        """A bucket (a top-level directory of the POSIX backend); returns ``s3://name``."""
        (self.data / name).mkdir(parents=True, exist_ok=True)
        return f"s3://{name}"

    def start(self) -> ObjectStoreServer:
        binary = versitygw_binary()
        self.data.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "versitygw.log"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir),
               "ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key}
        with open(log, "ab") as logf:
            self.proc = subprocess.Popen(
                [str(binary), "--port", f"127.0.0.1:{self.port}", "--region", self.region, "--quiet",
                 "posix", str(self.data)],
                stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"versitygw exited with {self.proc.returncode}:\n{_tail(log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    if sock.recv(16).startswith(b"HTTP/"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"versitygw not ready after {START_TIMEOUT:.0f}s:\n{_tail(log)}")

    def stop(self) -> None:
        _stop_pid(self.proc, signal.SIGTERM)


def server_dir(prefix: str) -> pathlib.Path:
    """A directory the postgres user can enter (pytest's tmp dirs are private to root)."""
    return pathlib.Path(tempfile.mkdtemp(prefix=f"tp-{prefix}-"))


@contextlib.contextmanager
def running_redis(prefix: str = "redis") -> Iterator[RedisServer]:
    """A started Redis in a fresh directory, stopped and removed on exit."""
    workdir = server_dir(prefix)
    redis = RedisServer(workdir)
    try:
        yield redis.start()
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(prefix: str = "pg") -> Iterator[PostgresServer]:
    """A started throw-away PostgreSQL cluster, stopped and removed on exit."""
    workdir = server_dir(prefix)
    postgres = PostgresServer(workdir)
    try:
        yield postgres.init().start()
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def running_object_store(prefix: str = "s3") -> Iterator[ObjectStoreServer]:
    """A started S3-compatible server in a fresh directory, stopped and removed on exit."""
    workdir = server_dir(prefix)
    server = ObjectStoreServer(workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
