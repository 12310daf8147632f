"""``trading-platform train --session NS/NAME --out URI``: one retraining run, as the training Job runs it.

Trains a model with ``inference.train`` (the same code that produced the builtin model), publishes
it as a new version ``<out>/<session>/<version>`` (``inference.artifact.publish``: the model file,
then a manifest with its sha256, the training data and the metrics; ``s3://``, ``pvc://`` or
``file://``), and offers the version to the session's staged rollout by writing
``status.modelCandidate`` (a field only training runs write: a plain merge). The operator then rolls
it out from the first canary step, and the worker checks the sha256 before loading it; nothing here
makes it serve.

A run whose model does not beat predicting zero on its validation set offers nothing and fails
(exit 1), so a broken training run never reaches the rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import pathlib
import sys
import tempfile
from dataclasses import asdict
from typing import Any

from trading_workers.errors import ConfigError, TradingError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model for a TradingSession and offer it to its rollout")
    p.add_argument("--session", required=True, help="NAMESPACE/NAME")
    p.add_argument("--out", required=True, help="where to publish the version: s3://bucket/prefix, pvc://claim/dir "
                                                "or file:///dir")
    p.add_argument("--samples", type=int, default=40_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=None, help="default: derived from the time of the run")
    p.add_argument("--job", default=None, help="the Job running this (recorded in the artifact and the offer)")


async def _offer(namespace: str, name: str, candidate: dict[str, Any]) -> None:
    from trading_workers.runtime import Kube
    from trading_workers.session_status import SessionStatus

    await SessionStatus(Kube(), namespace, name).merge({"modelCandidate": candidate})


def main(args: argparse.Namespace) -> int:
    from trading_workers.inference import artifact, train
    from trading_workers.inference import model as model_mod
    from trading_workers.runtime import setup_logging

    setup_logging({"session": args.session, "command": "train"})
    try:
        namespace, _, name = args.session.partition("/")
        if not namespace or not name:
            raise ConfigError(f"--session must be NAMESPACE/NAME, got {args.session!r}")
        now = dt.datetime.now(dt.UTC)
        seed = args.seed if args.seed is not None else int(now.timestamp()) % 1_000_000
        cfg = train.TrainConfig(seed=seed, samples=args.samples, epochs=args.epochs,
                                val_samples=max(1_000, min(20_000, args.samples // 4)))
        net, report = train.train(cfg)
        quality = {k: v for k, v in asdict(report).items() if k != "seconds"}
        print(json.dumps({"out": args.out, **asdict(report)}, sort_keys=True))
        if not report.val_mse < report.baseline_mse:
            print("train: the model does not beat predicting zero; nothing offered", file=sys.stderr)
            return 1
        config = {**asdict(cfg), "hidden": list(cfg.hidden)}
        meta = {"config": config, "report": quality, "session": args.session, "job": args.job,
                "trainedAt": now.isoformat().replace("+00:00", "Z")}
        training_data = {"source": "synthetic price process (trading_workers.inference.synthetic)", "seed": cfg.seed,
                         "samples": cfg.samples, "validationSamples": cfg.val_samples, "window": cfg.window}
        with tempfile.TemporaryDirectory(prefix="trading-train-") as tmp:
            path = pathlib.Path(tmp) / artifact.MODEL_FILE
            model_mod.save(net, path, meta)
            uri, manifest = artifact.publish(path, args.out, name, training_data=training_data,
                                             metrics={**quality, "job": args.job}, now=now)
        print(f"train: published {uri} (sha256 {manifest.sha256})")
        candidate: dict[str, Any] = {"uri": uri, "offeredAt": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                                     "validationAccuracyPct": round(100.0 * report.directional_accuracy, 3)}
        if args.job:
            candidate["job"] = args.job
        asyncio.run(_offer(namespace, name, candidate))
        print(f"train: offered {uri} to {args.session}'s rollout")
        return 0
    except (ConfigError, model_mod.ModelLoadError, artifact.ArtifactError) as exc:
        print(f"train: configuration error: {exc}", file=sys.stderr)
        return 2
    except TradingError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 1
