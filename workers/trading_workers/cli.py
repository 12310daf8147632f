"""``trading-platform worker <role> --session NAMESPACE/NAME``: the one entry point of every worker container.

Each role is an ``async def run(runtime)`` in its own module; this file
only parses arguments, builds the runtime and maps failures to exit codes
(2: configuration, 1: anything else). Role modules are imported lazily so
the executor never pays for torch, and a missing optional part (the
inference package) fails with a clear message instead of an ImportError.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from trading_operator.api.session import Role
from trading_workers import bus as bus_mod
from trading_workers.backup import cli as backup_cli
from trading_workers.domain import Quote
from trading_workers.errors import ConfigError, TradingError, TransientError
from trading_workers.runtime import Runtime, serve

log = logging.getLogger("trading_workers.cli")

ROLE_MODULES = {
    Role.MARKET_DATA.value: "trading_workers.market_data",
    Role.STRATEGY.value: "trading_workers.strategy.worker",
    Role.RISK.value: "trading_workers.risk.worker",
    Role.EXECUTOR.value: "trading_workers.executor",
}


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

        async def pump() -> None:
            while not self.rt.stop.is_set():
                try:
                    await consumer.poll()
                except TransientError as exc:
                    log.warning("quote read failed; will retry", extra={"error": str(exc)})
                    await asyncio.sleep(0.5)

        task = asyncio.create_task(pump())
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

    async def publish_signal(self, signal: Mapping[str, Any]) -> None:
        await self.bus.publish(bus_mod.SIGNALS, bus_mod.encode_signal(signal))

    async def request_reducing(self, reason: str) -> None:
        """The inference guard: latch Reducing (source Inference) through the shared status transaction."""
        from trading_operator.api import transactions
        from trading_operator.api.status import ReducingSource
        from trading_workers.session_status import SessionStatus

        kube = self.rt.require_kube()
        await SessionStatus(kube, self.rt.settings.namespace, self.rt.settings.name).transact(
            lambda st, now: transactions.request_reducing(st, source=ReducingSource.INFERENCE, reason=reason,
                                                          now=now, rule="inferenceGuard"))


async def _inference(rt: Runtime) -> None:
    try:
        worker = importlib.import_module("trading_workers.inference.worker")
    except ImportError as exc:
        raise ConfigError(f"the inference role needs trading_workers.inference.worker (and torch): {exc}") from exc
    run = getattr(worker, "run", None)
    if run is None:
        raise ConfigError("trading_workers.inference.worker has no run(runtime)")
    io = InferenceIO(rt)
    try:
        await run(io)
    finally:
        await io.client.aclose()


def role_main(role: str) -> Callable[[Runtime], Awaitable[None]]:
    if role == Role.INFERENCE.value:
        return _inference
    module = importlib.import_module(ROLE_MODULES[role])
    main: Callable[[Runtime], Awaitable[None]] = module.run
    return main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trading-platform", description="trading-platform worker processes")
    sub = p.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one worker role for a TradingSession")
    worker.add_argument("role", choices=[r.value for r in Role])
    worker.add_argument("--session", help="NAMESPACE/NAME (default: $TRADING_SESSION)")
    backup_cli.add_parser(sub)  # `trading-platform backup run|verify|restore` (trading_workers.backup.cli)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "backup":
        return backup_cli.main(args)
    try:
        return asyncio.run(serve(args.role, args.session, role_main(args.role)))
    except ConfigError as exc:
        print(f"trading-platform: configuration error: {exc}", file=sys.stderr)
        return 2
    except TradingError as exc:
        print(f"trading-platform: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
