"""The runtime every worker role shares: ``serve`` runs a role, ``Runtime`` is what a role gets.

A worker is one asyncio program with the same outer shell whatever its role, so that operations
(probes, logs, shutdown, retries) behave the same everywhere. Each concern is a small module:

* ``settings`` — process settings from the environment (names from the contract), the worker config;
* ``kube`` — the Kubernetes API calls workers make, and what an HTTP status means;
* ``watch`` — the worker's own TradingSession, watched in a thread;
* ``health`` — ``/healthz``, ``/readyz``, ``/metrics``;
* ``retry`` — bounded, jittered retries of ``TransientError`` only;
* ``logs`` — JSON lines with context fields, secrets masked.

Every role is ``async def run(runtime: Runtime)``; SIGTERM/SIGINT set ``runtime.stop`` and roles
finish their current step and return.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from trading_operator.api import workerconfig as wc
from trading_operator.api.clock import session_now
from trading_workers import process_metrics
from trading_workers.bus import session_prefix
from trading_workers.errors import ConfigError
from trading_workers.runtime.health import Health
from trading_workers.runtime.kube import Conflict, Kube, NotFound, resource_version
from trading_workers.runtime.logs import log_context, setup_logging
from trading_workers.runtime.retry import with_retries
from trading_workers.runtime.settings import Settings, load_config
from trading_workers.runtime.watch import SessionWatch

__all__ = ["Conflict", "Health", "Kube", "NotFound", "Runtime", "SessionWatch", "Settings", "load_config",
           "log_context", "resource_version", "serve", "setup_logging", "with_retries"]

log = logging.getLogger("trading_workers.runtime")


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
