"""Inference throughput and batch latency of the default model on this machine's CPU (issue 8, figure 4).

Goal: ≥ 100,000 predictions/s with batch p99 ≤ 10 ms.

What is timed is the worker's real hot path, ``Predictor.predict``: input
screening, the copy into the preallocated buffer, normalization and the MLP,
outputs back to numpy. Two baselines run in the same process, on the same
inputs, with the same thread count:

- **batch size 1** through the same predictor — what scoring symbol by symbol would give;
- **numpy** — the same network (same weights, same features) as float32 numpy
  matmuls, the obvious dependency-free implementation.

Run::

    .venv/bin/python -m benchmarks.inference            # ~30 s; table on stdout
    .venv/bin/python -m benchmarks.inference --json benchmarks/results/inference.json

Bounded: each measurement runs for ``--seconds`` (default 2.5) after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from trading_workers.inference import model as model_mod
from trading_workers.inference import predictor as predictor_mod
from trading_workers.inference import synthetic

BATCH_SIZES = (64, 256, 1024, 4096)
GOAL_PREDICTIONS_PER_S = 100_000.0
GOAL_P99_MS = 10.0
COMMAND = ".venv/bin/python -m benchmarks.inference"


def numpy_mlp(net: model_mod.PriceMLP) -> Callable[[np.ndarray], np.ndarray]:
    """The same network in plain numpy (float32), for the baseline and as a cross-check."""
    layers = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
              for m in net.net if isinstance(m, torch.nn.Linear)]

    def forward(prices: np.ndarray) -> np.ndarray:
        returns = np.log(prices[:, 1:] / prices[:, :-1])
        scale = np.sqrt(np.mean(returns * returns, axis=1, keepdims=True) + np.float32(model_mod.EPS))
        h = np.clip(returns / scale, -model_mod.Z_CLIP, model_mod.Z_CLIP)
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                np.maximum(h, 0, out=h)
        return h[:, 0]

    return forward


def measure(fn: Callable[[np.ndarray], object], inputs: Sequence[np.ndarray], seconds: float,
            warmup: int = 20, max_iters: int = 200_000) -> dict[str, float]:
    """Call ``fn`` on rotating inputs for ``seconds``; per-call latency percentiles and rows/s."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    rows = inputs[0].shape[0]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while len(latencies) < max_iters:
        t0 = time.perf_counter()
        fn(inputs[len(latencies) % len(inputs)])
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if t1 >= deadline:
            break
    elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1e3
    return {"predictions_per_s": rows * len(latencies) / elapsed, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "batches": float(len(latencies))}


def run(batch_sizes: Sequence[int] = BATCH_SIZES, seconds: float = 2.5, threads: int = 1,
        compare_threads: Sequence[int] = (2,)) -> dict[str, Any]:
    """Torch runs first (all thread counts), numpy last: BLAS threads left spinning must not disturb torch."""
    artifact = model_mod.load_uri("builtin://default")
    net = artifact.model
    reference = numpy_mlp(net)
    check = synthetic.price_windows(512, net.window, seed=99).prices
    with torch.inference_mode():
        expected = net(torch.from_numpy(check)).numpy()
    predicted = predictor_mod.Predictor(net, batch_size=512).predict(check).scores
    max_diff = float(max(np.max(np.abs(reference(check) - expected)), np.max(np.abs(predicted - expected))))
    if max_diff > 1e-4:
        raise SystemExit(f"implementations disagree (max |diff| {max_diff:g}); the figures would not be comparable")
    data = {bs: [synthetic.price_windows(bs, net.window, seed=1000 + k).prices for k in range(4)]
            for bs in (1, *batch_sizes)}
    results: dict[int, dict[str, Any]] = {bs: {"batch_size": bs} for bs in batch_sizes}
    batch1: dict[str, float] = {}
    for t in (threads, *[c for c in compare_threads if c != threads]):
        torch.set_num_threads(t)
        if t == threads:
            batch1 = measure(predictor_mod.Predictor(net, batch_size=1, max_latency_ms=1e9).predict, data[1], seconds)
        for bs in batch_sizes:
            pred = predictor_mod.Predictor(net, batch_size=bs, max_latency_ms=1e9)
            results[bs]["torch" if t == threads else f"torch_{t}_threads"] = measure(pred.predict, data[bs], seconds)
    torch.set_num_threads(threads)
    for bs in batch_sizes:
        results[bs]["numpy"] = measure(reference, data[bs], seconds * 0.6)
    return {"model": "builtin://default", "window": net.window, "hidden": list(net.hidden),
            "device": "cpu", "threads": threads, "compare_threads": [c for c in compare_threads if c != threads],
            "torch": str(torch.__version__), "numpy": np.__version__,
            "cpu": platform.processor() or platform.machine(), "cpus_available": len(os.sched_getaffinity(0)),
            "load_average": list(os.getloadavg()), "max_abs_diff": max_diff, "batch1": batch1,
            "results": [results[bs] for bs in batch_sizes]}


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Figures in the shape ``make bench`` collects: figure, value, unit, baseline, ratio, command."""
    out: list[dict[str, Any]] = []
    b1 = report["batch1"]["predictions_per_s"]
    for r in report["results"]:
        bs, t, n = r["batch_size"], r["torch"], r["numpy"]
        out.append({"figure": f"inference predictions/s, batch {bs}", "value": t["predictions_per_s"],
                    "unit": "predictions/s", "baseline": b1, "baseline_label": "same predictor, batch size 1",
                    "ratio": t["predictions_per_s"] / b1, "goal": f">= {GOAL_PREDICTIONS_PER_S:,.0f}",
                    "meets_goal": t["predictions_per_s"] >= GOAL_PREDICTIONS_PER_S, "command": COMMAND})
        out.append({"figure": f"inference batch p99, batch {bs}", "value": t["p99_ms"], "unit": "ms",
                    "baseline": n["p99_ms"], "baseline_label": "same MLP in numpy, same batch",
                    "ratio": t["p99_ms"] / n["p99_ms"], "goal": f"<= {GOAL_P99_MS:g} ms",
                    "meets_goal": t["p99_ms"] <= GOAL_P99_MS, "command": COMMAND})
    return out


def table(report: dict[str, Any]) -> str:
    b1 = report["batch1"]
    others = report["compare_threads"]
    lines = [
        f"inference: {report['model']} (window {report['window']}, hidden {report['hidden']}), "
        f"{report['device']}, torch {report['torch']}, {report['threads']} intra-op thread(s), "
        f"{report['cpus_available']} CPUs, load average {report['load_average'][0]:.2f}",
        f"baseline batch 1 (same predictor): {b1['predictions_per_s']:,.0f} predictions/s, "
        f"p50 {b1['p50_ms']:.3f} ms, p99 {b1['p99_ms']:.3f} ms",
        f"{'batch':>6} {'pred/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'x batch-1':>10} {'numpy pred/s':>13} "
        f"{'numpy p99':>10} {'x numpy':>8}"
        + "".join(f" {f'{c}-thread pred/s':>16} {f'{c}-thread p99':>13}" for c in others)
        + "  goal (>=100k/s, p99<=10ms)",
    ]
    for r in report["results"]:
        t, n = r["torch"], r["numpy"]
        ok = t["predictions_per_s"] >= GOAL_PREDICTIONS_PER_S and t["p99_ms"] <= GOAL_P99_MS
        line = (f"{r['batch_size']:>6} {t['predictions_per_s']:>12,.0f} {t['p50_ms']:>8.3f} {t['p99_ms']:>8.3f} "
                f"{t['predictions_per_s'] / b1['predictions_per_s']:>9.1f}x {n['predictions_per_s']:>13,.0f} "
                f"{n['p99_ms']:>10.3f} {t['predictions_per_s'] / n['predictions_per_s']:>7.2f}x")
        for c in others:
            o = r[f"torch_{c}_threads"]
            line += f" {o['predictions_per_s']:>16,.0f} {o['p99_ms']:>13.3f}"
        lines.append(line + f"  {'meets' if ok else 'MISSES'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.5, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of the reported figures (the worker's default, 1)")
    parser.add_argument("--compare-threads", type=lambda s: [int(x) for x in s.split(",") if x], default=[2],
                        help="other thread counts to measure beside it (default 2: this machine's cores)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(BATCH_SIZES))
    parser.add_argument("--json", type=pathlib.Path, help="also write the report and figures here")
    args = parser.parse_args(argv)
    report = run(args.batch_sizes, args.seconds, args.threads, args.compare_threads)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"report": report, "figures": rows(report)}, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
