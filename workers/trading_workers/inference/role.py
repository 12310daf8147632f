"""The inference role's ``run(runtime)``: the worker runtime as the small interface ``inference.worker`` uses.

``inference.worker.run`` depends only on ``InferenceRuntime`` (quotes in, signals out, a Reducing
request, readiness, the model's status), so it is tested over a stand-in; ``InferenceIO`` is that
interface over the bus (the ``inference`` consumer group on market data, the ``signals`` stream) and the session's status
(the shared ``request_reducing`` transaction, ``status.inference`` and the rollout it reads). torch is
imported only when the role runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from trading_workers import bus as bus_mod
from trading_workers.domain import Quote, Signal
from trading_workers.errors import ConfigError, TransientError
from trading_workers.runtime import Runtime

log = logging.getLogger("trading_workers.inference")


class InferenceIO:
    """The runtime interface ``trading_workers.inference.worker.run`` expects, over the bus and the status."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.client = bus_mod.connect(rt.settings.redis_url)
        self.bus = bus_mod.Bus(self.client, rt.redis_prefix)
        self._ready = False
        rt.health.add("model", lambda: (self._ready, "model not loaded"))

    @property
    def config(self) -> Any:
        return self.rt.config

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    async def quotes(self) -> AsyncIterator[Quote]:
        """Quotes through the ``inference`` consumer group; a quote is acknowledged once the next is asked for."""
        buffer: asyncio.Queue[tuple[str, Quote]] = asyncio.Queue(maxsize=1)

        async def handle(msg_id: str, quote: Quote) -> None:
            await buffer.put((msg_id, quote))
            await buffer.join()

        consumer = bus_mod.Consumer(self.bus, bus_mod.MARKET_DATA, "inference", socket.gethostname(),
                                    bus_mod.decode_quote, handle)

        def failed(exc: TransientError) -> None:
            log.warning("quote read failed; will retry", extra={"error": str(exc)})

        task = asyncio.create_task(consumer.run(stop=self.rt.stop, on_error=failed))
        try:
            while not self.rt.stop.is_set():
                getter = asyncio.create_task(buffer.get())
                stopper = asyncio.create_task(self.rt.stop.wait())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    return
                _, quote = getter.result()
                yield quote
                buffer.task_done()
        finally:
            task.cancel()

    async def publish_signal(self, signal: Signal) -> None:
        await self.bus.publish(bus_mod.SIGNALS, bus_mod.encode_signal(signal))

    async def report_model(self, status: Any) -> None:
        """``status.model`` (owned by the inference workers: a plain merge) and an Event naming the version or the fault."""
        from trading_operator.api.status import ModelState
        from trading_workers.session_status import EventRecorder, SessionStatus

        kube = self.rt.require_kube()
        ns, name = self.rt.settings.namespace, self.rt.settings.name
        status.at = status.at or dt.datetime.now(dt.UTC)
        try:
            # Every field, unset ones as null: a merge patch must not leave the previous version beside a refusal.
            await SessionStatus(kube, ns, name).merge({"model": status.model_dump(mode="json", by_alias=True)})
        except Exception as exc:   # reporting is best effort; serving (or refusing) does not depend on it
            log.warning("model status not written", extra={"error": str(exc)})
        refused = status.state == ModelState.REFUSED
        message = (f"model {status.uri} refused, not served: {status.message}" if refused else
                   f"serving model {status.uri} version {status.version}"
                   + (" (sha256 verified against its manifest)" if status.verified else " (unverified: no manifest)"))
        await EventRecorder(kube, ns, name, "inference").record("Warning" if refused else "Normal",
                                                               str(status.reason), message)

    async def read_session(self) -> dict[str, Any]:
        """The TradingSession (the worker reads ``status.modelRollout`` from it)."""
        return await self.rt.require_kube().get_session(self.rt.settings.namespace, self.rt.settings.name)

    async def report_inference(self, report: dict[str, Any]) -> None:
        """``status.inference``: a field only this worker writes (a plain merge, ``SessionStatus.merge``)."""
        from trading_workers.session_status import SessionStatus

        await SessionStatus(self.rt.require_kube(), self.rt.settings.namespace,
                            self.rt.settings.name).merge({"inference": report})

    async def request_reducing(self, reason: str) -> None:
        """The inference guard: latch Reducing (source Inference) through the shared status transaction."""
        from trading_operator.api import transactions
        from trading_operator.api.status import ReducingSource
        from trading_workers.session_status import SessionStatus

        kube = self.rt.require_kube()
        await SessionStatus(kube, self.rt.settings.namespace, self.rt.settings.name).transact(
            lambda st, now: transactions.request_reducing(st, source=ReducingSource.INFERENCE, reason=reason,
                                                          now=now, rule="inferenceGuard"))


async def run(rt: Runtime) -> None:
    """The inference role: ``inference.worker.run`` over the bus and the session's status."""
    try:
        from trading_workers.inference import worker
    except ImportError as exc:
        raise ConfigError(f"the inference role needs trading_workers.inference.worker (and torch): {exc}") from exc
    io = InferenceIO(rt)
    try:
        await worker.run(io)
    finally:
        await io.client.aclose()
