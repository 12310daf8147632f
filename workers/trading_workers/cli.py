"""``trading-platform worker <role> --session NAMESPACE/NAME``: the one entry point of every worker container.

Each role is an ``async def run(runtime)`` in its own module (``ROLE_MODULES``); this file only
parses arguments, builds the runtime and maps failures to exit codes (2: configuration, 1: anything
else). Role modules are imported lazily so the executor never pays for torch; the inference role
(``inference.role``) imports torch only inside ``run``, so a missing optional part fails with a clear
configuration error instead of an ImportError.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Awaitable, Callable

from trading_operator.api.session import Role
from trading_workers.backup import cli as backup_cli
from trading_workers.errors import ConfigError, TradingError
from trading_workers.inference import retrain as retrain_cli
from trading_workers.runtime import Runtime, serve

log = logging.getLogger("trading_workers.cli")

ROLE_MODULES = {
    Role.MARKET_DATA.value: "trading_workers.market_data",
    Role.STRATEGY.value: "trading_workers.strategy.worker",
    Role.RISK.value: "trading_workers.risk.worker",
    Role.EXECUTOR.value: "trading_workers.executor",
    Role.INFERENCE.value: "trading_workers.inference.role",
}


def role_main(role: str) -> Callable[[Runtime], Awaitable[None]]:
    """The role's ``run(runtime)`` (every role module has one)."""
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
    retrain_cli.add_parser(sub)  # `trading-platform train --session NS/NAME --out DIR` (the training Job)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "backup":
        return backup_cli.main(args)
    if args.command == "train":
        return retrain_cli.main(args)
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
