"""The runtime every worker role shares.

A worker is one asyncio program with the same outer shell whatever its
role, so that operations (probes, logs, shutdown, retries) behave the same
everywhere:

* **Config**: the resolved ``WorkerConfig`` from the file ``TRADING_CONFIG``
  points at (the mounted ConfigMap), else read from the ConfigMap
  ``<session>-config`` through the API server. Env names come from
  ``trading_operator.api.workerconfig`` (the contract).
* **Kubernetes**: the client reads ``KUBECONFIG`` when set, else the pod's
  in-cluster credentials. ``SessionWatch`` watches the worker's own
  TradingSession in a thread and hands every version of it to a callback
  *in that thread*, so a halt reaches the executor without waiting for the
  event loop or the operator. The watch re-lists every few seconds; every
  successful contact refreshes a "confirmed at" time, which is how the
  executor knows the view is fresh (fail-closed when it is not).
* **Probes and metrics**: ``/healthz`` (the loop is alive), ``/readyz``
  (every registered readiness check passes; the body says which fail),
  ``/metrics`` (prometheus-client) on ``TRADING_HTTP_PORT``.
* **Shutdown**: SIGTERM/SIGINT set ``stop``; roles finish their current
  step and return.
* **Retries**: ``retrying`` — tenacity, jittered exponential backoff,
  bounded in time, only for ``TransientError``.
* **Logs**: one JSON object per line with the session, the role and any
  ``log_context`` fields (``client_order_id``); known secret values and
  URL passwords are masked before a line is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import pathlib
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from trading_operator.api import metric_names as mn
from trading_operator.api import workerconfig as wc
from trading_operator.api.clock import session_now
from trading_operator.api.common import GROUP, VERSION
from trading_workers import process_metrics
from trading_workers.bus import session_prefix
from trading_workers.errors import ConfigError, DependencyUnavailable, PermanentError, TransientError

log = logging.getLogger("trading_workers.runtime")

SESSIONS = "tradingsessions"
POLICIES = "riskpolicies"
T = TypeVar("T")

API_ERRORS = mn.collector(mn.APISERVER_ERRORS)
WATCH_RESTARTS = mn.collector(mn.SESSION_WATCH_RESTARTS)

# --------------------------------------------------------------------------- logging

_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("trading_log_context", default={})  # noqa: B039
_RESERVED = set(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {"message", "asctime", "taskName"}
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s/]+@")


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (e.g. ``client_order_id``) to every log line written inside the block."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _secret_values() -> list[str]:
    names = (wc.ENV_BROKER_KEY_ID, wc.ENV_BROKER_SECRET)
    return [v for v in (os.environ.get(n, "") for n in names) if len(v) >= 4]


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Mask credentials: known secret values and passwords in URLs."""
    for secret in secrets if secrets is not None else _secret_values():
        text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\1***@", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, static fields, context fields, extras."""

    def __init__(self, static: dict[str, str]) -> None:
        super().__init__()
        self.static = static
        self.secrets = _secret_values()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(), **self.static,
            **_CONTEXT.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str), self.secrets)


def setup_logging(static: dict[str, str], level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("TRADING_LOG_LEVEL", "INFO"))
    for noisy in ("kubernetes", "urllib3", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- retries

def retrying(*, max_delay: float = 30.0, max_wait: float = 5.0, initial: float = 0.1) -> tenacity.AsyncRetrying:
    """Retry ``TransientError`` with jittered exponential backoff, for at most ``max_delay`` seconds."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        wait=tenacity.wait_random_exponential(multiplier=initial, max=max_wait),
        stop=tenacity.stop_after_delay(max_delay),
        reraise=True,
    )


async def with_retries(fn: Callable[[], Awaitable[T]], *, max_delay: float = 30.0, max_wait: float = 5.0) -> T:
    async for attempt in retrying(max_delay=max_delay, max_wait=max_wait):
        with attempt:
            return await fn()
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    """Process settings from the command line and the environment (names from the contract)."""

    namespace: str
    name: str
    role: str
    redis_url: str
    journal_dsn: str
    http_port: int
    config_path: str | None
    bind_address: str = "127.0.0.1"

    @property
    def session_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_env(cls, role: str, session: str | None = None, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        session = session or env.get(wc.ENV_SESSION, "")
        if session.count("/") != 1 or not all(session.split("/")):
            raise ConfigError(f"session must be NAMESPACE/NAME, got {session!r}")
        namespace, name = session.split("/")
        try:
            port = int(env.get(wc.ENV_HTTP_PORT, wc.DEFAULT_HTTP_PORT))
        except ValueError as exc:
            raise ConfigError(f"{wc.ENV_HTTP_PORT} must be a port number") from exc
        return cls(namespace=namespace, name=name, role=role,
                   redis_url=env.get(wc.ENV_REDIS_URL, "redis://127.0.0.1:6379/0"),
                   journal_dsn=env.get(wc.ENV_JOURNAL_DSN, ""), http_port=port,
                   config_path=env.get(wc.ENV_CONFIG) or None, bind_address=wc.bind_address(env))


# --------------------------------------------------------------------------- kubernetes

class NotFound(PermanentError):
    """The object does not exist."""


class Conflict(TransientError):
    """The object changed since it was read (optimistic concurrency); read again and retry."""


class Kube:
    """The Kubernetes API, called from threads (the official client is synchronous)."""

    def __init__(self) -> None:
        from kubernetes import client, config

        self._client_mod = client
        cfg = client.Configuration()
        kubeconfig = os.environ.get("KUBECONFIG")
        try:
            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig.split(os.pathsep)[0], client_configuration=cfg)
            else:
                config.load_incluster_config(client_configuration=cfg)
        except Exception as exc:
            raise ConfigError(f"no Kubernetes credentials (KUBECONFIG or in-cluster): {exc}") from exc
        self.configuration = cfg
        self.api_client = client.ApiClient(configuration=cfg)

    def new_api_client(self) -> Any:
        return self._client_mod.ApiClient(configuration=self.configuration)

    def custom(self, api_client: Any = None) -> Any:
        return self._client_mod.CustomObjectsApi(api_client or self.api_client)

    async def _call(self, op: str, fn: Callable[[], T]) -> T:
        from kubernetes.client.rest import ApiException

        try:
            return await asyncio.to_thread(fn)
        except ApiException as exc:
            API_ERRORS.labels(op).inc()
            if exc.status == 404:
                raise NotFound(f"{op}: not found") from exc
            if exc.status == 409:
                raise Conflict(f"{op}: conflict") from exc
            if exc.status in (429, 500, 502, 503, 504) or exc.status is None or exc.status == 0:
                raise DependencyUnavailable("apiserver", f"{op}: HTTP {exc.status}") from exc
            raise PermanentError(f"{op}: HTTP {exc.status}: {exc.reason}") from exc
        except Exception as exc:  # urllib3 connection errors, timeouts
            API_ERRORS.labels(op).inc()
            raise DependencyUnavailable("apiserver", f"{op}: {exc.__class__.__name__}") from exc

    async def get_session(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("get_session", lambda: self.custom().get_namespaced_custom_object(
            GROUP, VERSION, namespace, SESSIONS, name, _request_timeout=10))

    async def patch_session_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch on the status subresource (a ``metadata.resourceVersion`` in ``body`` is a precondition)."""
        return await self._call("patch_status", lambda: self.custom().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, SESSIONS, name, body, _request_timeout=10))

    async def get_policy(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("get_policy", lambda: self.custom().get_namespaced_custom_object(
            GROUP, VERSION, namespace, POLICIES, name, _request_timeout=10))

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        core = self._client_mod.CoreV1Api(self.api_client)
        await self._call("create_event", lambda: core.create_namespaced_event(namespace, body,  # type: ignore[arg-type]
                                                                              _request_timeout=10))

    async def patch_event(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        core = self._client_mod.CoreV1Api(self.api_client)
        await self._call("patch_event", lambda: core.patch_namespaced_event(name, namespace, body,
                                                                           _request_timeout=10))

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        core = self._client_mod.CoreV1Api(self.api_client)
        cm = await self._call("read_configmap", lambda: core.read_namespaced_config_map(name, namespace,
                                                                                         _request_timeout=10))
        return dict(cm.data or {})


def resource_version(obj: dict[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


class SessionWatch(threading.Thread):
    """Watches one TradingSession; calls ``on_object`` (in this thread) with every newer version.

    ``on_object(None)`` means the session is gone. ``on_lost`` is called when the
    watch fails (the view can no longer be confirmed). Every list, event and
    bookmark refreshes ``confirmed_at`` (``time.monotonic``).
    """

    def __init__(self, kube: Kube, namespace: str, name: str, on_object: Callable[[dict[str, Any] | None], None],
                 on_lost: Callable[[str], None], *, resync_seconds: int = 5) -> None:
        super().__init__(name=f"watch-{namespace}/{name}", daemon=True)
        self.kube, self.namespace, self.name = kube, namespace, name
        self.on_object, self.on_lost = on_object, on_lost
        self.resync_seconds = resync_seconds
        self.confirmed_at = 0.0
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def confirm(self) -> None:
        self.confirmed_at = time.monotonic()

    def run(self) -> None:
        from kubernetes import watch

        api = self.kube.custom(self.kube.new_api_client())
        selector = f"metadata.name={self.name}"
        backoff = 0.2
        while not self._stopped.is_set():
            try:
                listing = api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, SESSIONS,
                                                            field_selector=selector, _request_timeout=10)
                items = listing.get("items") or []
                self.confirm()
                self.on_object(items[0] if items else None)
                backoff = 0.2
                stream = watch.Watch()
                for event in stream.stream(api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                           SESSIONS, field_selector=selector,
                                           resource_version=listing["metadata"]["resourceVersion"],
                                           timeout_seconds=self.resync_seconds, allow_watch_bookmarks=True,
                                           _request_timeout=self.resync_seconds + 5):
                    if self._stopped.is_set():
                        stream.stop()
                        break
                    kind = event.get("type")
                    if kind == "ERROR":
                        break
                    self.confirm()
                    if kind in ("ADDED", "MODIFIED"):
                        self.on_object(event["object"])
                    elif kind == "DELETED":
                        self.on_object(None)
            except Exception as exc:  # any failure: the view is unconfirmed until the next list
                WATCH_RESTARTS.inc()
                self.on_lost(exc.__class__.__name__)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)


# --------------------------------------------------------------------------- probes

ReadinessCheck = Callable[[], tuple[bool, str]]


@dataclass
class Health:
    """``/healthz``, ``/readyz`` and ``/metrics``."""

    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    def readiness(self) -> tuple[bool, dict[str, str]]:
        results = {name: check() for name, check in self.checks.items()}
        return all(ok for ok, _ in results.values()), {n: d for n, (ok, d) in results.items() if not ok}

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, failing = self.readiness()
        return web.json_response({"ready": ready, "failing": failing}, status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, port: int, host: str = "127.0.0.1") -> None:  # Settings.bind_address in a worker
        app = web.Application()
        app.add_routes([web.get("/healthz", self._healthz), web.get("/readyz", self._readyz),
                        web.get("/metrics", self._metrics)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --------------------------------------------------------------------------- config and runtime

async def load_config(settings: Settings, kube: Kube | None) -> wc.WorkerConfig:
    """The worker config from ``TRADING_CONFIG``, else from the session's ConfigMap."""
    if settings.config_path:
        try:
            text = pathlib.Path(settings.config_path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {wc.ENV_CONFIG}={settings.config_path}: {exc}") from exc
    else:
        if kube is None:
            raise ConfigError(f"no {wc.ENV_CONFIG} file and no Kubernetes access to read the ConfigMap")
        cm_name = f"{settings.name}-config"
        data = await with_retries(lambda: kube.read_configmap(settings.namespace, cm_name), max_delay=60)
        if wc.CONFIG_KEY not in data:
            raise ConfigError(f"ConfigMap {cm_name} has no {wc.CONFIG_KEY}")
        text = data[wc.CONFIG_KEY]
    try:
        return wc.WorkerConfig.model_validate_json(text)
    except ValueError as exc:
        raise ConfigError(f"invalid worker config: {exc}") from exc


@dataclass
class Runtime:
    """Everything a role needs: settings, config, API access, probes, the stop signal."""

    settings: Settings
    config: wc.WorkerConfig
    kube: Kube | None
    health: Health = field(default_factory=Health)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def session_key(self) -> str:
        return self.settings.session_key

    @property
    def redis_prefix(self) -> str:
        return session_prefix(self.settings.namespace, self.settings.name)

    def session_now(self) -> dt.datetime:
        return session_now(self.config.clock, self.config.clock_anchor)

    def require_journal_dsn(self) -> str:
        if not self.settings.journal_dsn:
            raise ConfigError(f"this role needs the trade journal: set {wc.ENV_JOURNAL_DSN}")
        return self.settings.journal_dsn

    def require_kube(self) -> Kube:
        if self.kube is None:
            raise ConfigError("this role needs the Kubernetes API (KUBECONFIG or in-cluster credentials)")
        return self.kube

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True if the worker should stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        return self.stop.is_set()


def _maybe_kube() -> Kube | None:
    if os.environ.get("KUBECONFIG") or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return Kube()
    return None


async def serve(role: str, session: str | None, main: Callable[[Runtime], Awaitable[None]]) -> int:
    """Run one worker role until SIGTERM; returns the process exit code."""
    settings = Settings.from_env(role, session)
    setup_logging({"session": settings.session_key, "role": role})
    process_metrics.install()
    kube = _maybe_kube()
    config = await load_config(settings, kube)
    rt = Runtime(settings=settings, config=config, kube=kube)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, rt.stop.set)
    await rt.health.start(settings.http_port, settings.bind_address)
    log.info("worker started", extra={"port": settings.http_port, "config_digest": config.digest()})
    try:
        await main(rt)
    finally:
        await rt.health.stop()
        log.info("worker stopped")
    return 0
