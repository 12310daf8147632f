"""``trading-platform backup run|verify|restore``: the command group behind Backup Jobs and the restore runbook.

    trading-platform backup run     --backup NS/NAME [--destination DIR|s3://BUCKET/PREFIX]
    trading-platform backup verify  --backup NS/NAME [--run RUN_ID] [--destination ...]
    trading-platform backup restore --backup NS/NAME [--run RUN_ID] --session NS/NAME [--targets journal,redis]

Where runs live: ``--destination DIR`` or ``s3://BUCKET/PREFIX``, else ``$TRADING_BACKUP_URI``
(an S3 destination; the operator's Job sets it, with ``$TRADING_BACKUP_ROOT`` as the staging
directory), else ``$TRADING_BACKUP_ROOT`` (the operator's Job sets it to the PVC mount). An S3
destination needs ``$TRADING_S3_ENDPOINT`` (absent: AWS), ``$AWS_ACCESS_KEY_ID`` and
``$AWS_SECRET_ACCESS_KEY``. The journal and Redis come from
``$TRADING_JOURNAL_DSN`` / ``$TRADING_REDIS_URL`` (or ``--journal-dsn`` /
``--redis-url``); the API server from ``$KUBECONFIG`` or the pod's account.

Exit codes: 0 done; 1 the backup or verification failed; 2 configuration
error; 3 refused (a restore while the session is trading, or a run that
does not match its manifest). Heavy imports wait until a command runs, so
``trading-platform worker ...`` never pays for them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sys
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trading_workers.backup.runner import Places

EXIT_FAILED, EXIT_CONFIG, EXIT_REFUSED = 1, 2, 3


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("backup", help="back up, verify and restore a session's journal, Redis, models, resources")
    commands = group.add_subparsers(dest="backup_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backup", required=True, help="the Backup, NAMESPACE/NAME")
        p.add_argument("--destination", help="directory or s3://bucket/prefix holding <backup>/<run-id>/ "
                                             "(default: $TRADING_BACKUP_URI, else $TRADING_BACKUP_ROOT)")
        p.add_argument("--journal-dsn", help="journal PostgreSQL URI (default: $TRADING_JOURNAL_DSN)")
        p.add_argument("--redis-url", help="Redis URL (default: $TRADING_REDIS_URL)")

    common(commands.add_parser("run", help="run the Backup once: targets, manifest, verify, retention, status"))
    verify = commands.add_parser("verify", help="check a run's artifacts and restore its journal into a scratch database")
    common(verify)
    verify.add_argument("--run", help="run id (default: the newest good run)")
    restore = commands.add_parser("restore", help="restore a halted or suspended session's journal and Redis keys")
    common(restore)
    restore.add_argument("--run", help="run id (default: the newest good run)")
    restore.add_argument("--session", required=True, help="the session to restore, NAMESPACE/NAME (must be the Backup's)")
    restore.add_argument("--targets", help="comma-separated: journal, redis (default: whichever of them the run holds)")


def _places(args: argparse.Namespace) -> Places:
    from trading_operator.api import backup as backup_api
    from trading_operator.api import workerconfig as wc
    from trading_workers.backup.runner import Places
    from trading_workers.errors import ConfigError

    s3_uri = args.destination if (args.destination or "").startswith("s3://") else (
        None if args.destination else os.environ.get(backup_api.ENV_BACKUP_URI))
    if s3_uri:
        from trading_workers import objectstore

        try:
            store = objectstore.open_s3(s3_uri.rstrip("/"))
        except objectstore.ObjectStoreError as exc:
            raise ConfigError(str(exc)) from exc
        staging = os.environ.get(backup_api.ENV_BACKUP_ROOT) or tempfile.mkdtemp(prefix="trading-backup-")
        return Places(root=pathlib.Path(staging), location=store.uri,
                      journal_dsn=args.journal_dsn or os.environ.get(wc.ENV_JOURNAL_DSN, ""),
                      redis_url=args.redis_url or os.environ.get(wc.ENV_REDIS_URL, "redis://127.0.0.1:6379/0"),
                      remote=store)
    if args.destination:
        root = pathlib.Path(args.destination).resolve()
        location = root.as_uri()
    elif os.environ.get(backup_api.ENV_BACKUP_ROOT):
        root = pathlib.Path(os.environ[backup_api.ENV_BACKUP_ROOT])
        location = os.environ.get(backup_api.ENV_BACKUP_LOCATION) or root.resolve().as_uri()
    else:
        raise ConfigError(f"where are the backups? give --destination DIR or set {backup_api.ENV_BACKUP_ROOT}")
    return Places(root=root, location=location,
                  journal_dsn=args.journal_dsn or os.environ.get(wc.ENV_JOURNAL_DSN, ""),
                  redis_url=args.redis_url or os.environ.get(wc.ENV_REDIS_URL, "redis://127.0.0.1:6379/0"))


async def _main(args: argparse.Namespace) -> int:
    from trading_workers.backup import runner
    from trading_workers.backup.status import BackupApi
    from trading_workers.runtime import Kube

    ns, name = runner.split_key(args.backup, "--backup")
    places = _places(args)
    api = BackupApi(Kube())
    if args.backup_command == "run":
        outcome = await runner.run_backup(api, ns, name, places)
    elif args.backup_command == "verify":
        outcome = await runner.verify_run(api, ns, name, places, args.run)
    else:
        targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
        if targets is not None and (not targets or set(targets) - {"journal", "redis"}):
            from trading_workers.errors import ConfigError

            raise ConfigError(f"--targets takes journal and/or redis, got {args.targets!r}")
        outcome = await runner.restore(api, ns, name, places, args.run, args.session, targets)
    print(f"{args.backup_command} {'ok' if outcome.ok else 'FAILED'}: run {outcome.run_id}: {outcome.message}")
    return 0 if outcome.ok else EXIT_FAILED


def main(args: argparse.Namespace) -> int:
    from trading_workers.backup.runner import RestoreRefused
    from trading_workers.errors import ConfigError, TradingError
    from trading_workers.runtime import setup_logging

    setup_logging({"backup": args.backup, "command": f"backup-{args.backup_command}"})
    try:
        return asyncio.run(_main(args))
    except RestoreRefused as exc:
        print(f"trading-platform backup {args.backup_command}: REFUSED: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ConfigError as exc:
        print(f"trading-platform backup {args.backup_command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except TradingError as exc:
        print(f"trading-platform backup {args.backup_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
