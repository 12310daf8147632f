"""Probes and metrics: ``/healthz`` (the loop is alive), ``/readyz`` (every registered readiness check
passes; the body says which fail), ``/metrics`` (prometheus-client), on ``TRADING_HTTP_PORT``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

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
