"""``trading-platform train --session NS/NAME --out DIR``: one retraining run, as the training Job runs it.

Trains a model with ``inference.train`` (the same code that produced the builtin model), writes
it as a new versioned artifact ``<session>-<UTC time>.pt`` under ``--out`` (``file:///dir`` or
``pvc://claim/dir``, resolved like model URIs), and offers it to the session's staged rollout by
writing ``status.modelCandidate`` (a field only training runs write: a plain merge). The operator
then rolls it out from the first canary step; nothing here makes it serve.

A run whose model does not beat predicting zero on its validation set offers nothing and fails
(exit 1), so a broken training run never reaches the rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from dataclasses import asdict
from typing import Any

from trading_workers.errors import ConfigError, TradingError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model for a TradingSession and offer it to its rollout")
    p.add_argument("--session", required=True, help="NAMESPACE/NAME")
    p.add_argument("--out", required=True, help="directory URI for the artifact: file:///dir or pvc://claim/dir")
    p.add_argument("--samples", type=int, default=40_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=None, help="default: derived from the time of the run")
    p.add_argument("--job", default=None, help="the Job running this (recorded in the artifact and the offer)")


def artifact_uri(out: str, session: str, now: dt.datetime) -> str:
    return f"{out.rstrip('/')}/{session}-{now.strftime('%Y%m%dT%H%M%SZ')}.pt"


async def _offer(namespace: str, name: str, candidate: dict[str, Any]) -> None:
    from trading_workers.runtime import Kube
    from trading_workers.session_status import SessionStatus

    await SessionStatus(Kube(), namespace, name).merge({"modelCandidate": candidate})


def main(args: argparse.Namespace) -> int:
    from trading_workers.inference import model as model_mod
    from trading_workers.inference import train
    from trading_workers.runtime import setup_logging

    setup_logging({"session": args.session, "command": "train"})
    try:
        namespace, _, name = args.session.partition("/")
        if not namespace or not name:
            raise ConfigError(f"--session must be NAMESPACE/NAME, got {args.session!r}")
        now = dt.datetime.now(dt.UTC)
        uri = artifact_uri(args.out, name, now)
        path = model_mod.resolve_uri(uri)
        seed = args.seed if args.seed is not None else int(now.timestamp()) % 1_000_000
        cfg = train.TrainConfig(seed=seed, samples=args.samples, epochs=args.epochs,
                                val_samples=max(1_000, min(20_000, args.samples // 4)))
        net, report = train.train(cfg)
        quality = {k: v for k, v in asdict(report).items() if k != "seconds"}
        print(json.dumps({"artifact": uri, **asdict(report)}, sort_keys=True))
        if not report.val_mse < report.baseline_mse:
            print("train: the model does not beat predicting zero; nothing offered", file=sys.stderr)
            return 1
        meta = {"config": {**asdict(cfg), "hidden": list(cfg.hidden)}, "report": quality, "session": args.session,
                "job": args.job, "trainedAt": now.isoformat().replace("+00:00", "Z")}
        model_mod.save(net, path, meta)
        candidate: dict[str, Any] = {"uri": uri, "offeredAt": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                                     "validationAccuracyPct": round(100.0 * report.directional_accuracy, 3)}
        if args.job:
            candidate["job"] = args.job
        asyncio.run(_offer(namespace, name, candidate))
        print(f"train: offered {uri} to {args.session}'s rollout")
        return 0
    except (ConfigError, model_mod.ModelLoadError) as exc:
        print(f"train: configuration error: {exc}", file=sys.stderr)
        return 2
    except TradingError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 1
