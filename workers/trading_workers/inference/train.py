"""Train the default price model on the synthetic process (deterministic, CPU, well under a minute).

The documented command that produced ``workers/trading_workers/models/default.pt``::

    .venv/bin/python -m trading_workers.inference.train --out workers/trading_workers/models/default.pt

Why it is reproducible: numpy and torch are seeded from one ``--seed``, the
shuffling uses its own seeded generator, training runs on one CPU thread with
deterministic algorithms, so the same command on the same torch build gives
the same weights. The artifact records the seed, the losses and the
baseline (always predicting zero) so anyone can see the model learned
something beyond the trivial answer.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from trading_workers.inference import model as model_mod
from trading_workers.inference import synthetic


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 7
    samples: int = 160_000
    val_samples: int = 20_000
    window: int = model_mod.DEFAULT_WINDOW
    hidden: tuple[int, ...] = field(default=model_mod.DEFAULT_HIDDEN)
    epochs: int = 6
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-5


@dataclass(frozen=True)
class TrainReport:
    val_mse: float
    baseline_mse: float           # predicting 0 (no view) on the same validation set
    directional_accuracy: float   # sign agreement on validation rows with a non-trivial move
    seconds: float


@contextmanager
def _deterministic_cpu() -> Iterator[None]:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def evaluate(net: model_mod.PriceMLP, data: synthetic.Dataset) -> tuple[float, float, float]:
    """(model MSE, zero-baseline MSE, directional accuracy) on ``data``."""
    with torch.inference_mode():
        pred = net(torch.from_numpy(data.prices)).numpy().astype(np.float64)
    target = data.target.astype(np.float64)
    mse = float(np.mean((pred - target) ** 2))
    baseline = float(np.mean(target**2))
    moved = np.abs(target) > 0.5
    accuracy = float(np.mean(np.sign(pred[moved]) == np.sign(target[moved]))) if moved.any() else math.nan
    return mse, baseline, accuracy


def train(cfg: TrainConfig) -> tuple[model_mod.PriceMLP, TrainReport]:
    start = time.perf_counter()
    with _deterministic_cpu():
        torch.manual_seed(cfg.seed)
        data = synthetic.price_windows(cfg.samples, cfg.window, seed=cfg.seed)
        val = synthetic.price_windows(cfg.val_samples, cfg.window, seed=cfg.seed + 1_000_003)
        net = model_mod.PriceMLP(window=cfg.window, hidden=cfg.hidden)
        x, y = torch.from_numpy(data.prices), torch.from_numpy(data.target)
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(cfg.samples / cfg.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch))
        shuffle = torch.Generator().manual_seed(cfg.seed)
        net.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(cfg.samples, generator=shuffle)
            for i in range(0, cfg.samples, cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                loss = torch.nn.functional.mse_loss(net(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        net.eval()
        mse, baseline, accuracy = evaluate(net, val)
    return net, TrainReport(val_mse=mse, baseline_mse=baseline, directional_accuracy=accuracy,
                            seconds=time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trading_workers.inference.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="where to write the .pt artifact")
    defaults = TrainConfig()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--samples", type=int, default=defaults.samples)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    args = parser.parse_args(argv)
    cfg = TrainConfig(seed=args.seed, samples=args.samples, epochs=args.epochs)
    net, report = train(cfg)
    # Wall time stays out of the artifact: the same command must give the same file contents.
    quality = {k: v for k, v in asdict(report).items() if k != "seconds"}
    meta = {"config": {**asdict(cfg), "hidden": list(cfg.hidden)}, "report": quality,
            "torch": str(torch.__version__), "command": "python -m trading_workers.inference.train --out <path>"}
    model_mod.save(net, args.out, meta)
    size = args.out.stat().st_size
    print(json.dumps({"out": str(args.out), "bytes": size, **asdict(report)}, sort_keys=True))
    if not report.val_mse < report.baseline_mse:
        print("error: the model does not beat predicting zero; refusing to call this a default", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
