"""Batched inference on cuda when available (else cpu), and the guard that asks for Reducing.

Why batches: scoring 500 symbols one at a time pays the framework overhead
500 times; one ``[B, window+1]`` matmul chain pays it once. Why preallocated
buffers: the hot path copies each batch into the same (pinned, on cuda) host
tensor and device tensor instead of allocating per call, so latency is flat
and the allocator never shows up in p99.

Why a guard: a model that emits NaN (corrupt weights, overflow) or that has
become too slow to act on fresh quotes is worse than no model. Either moves
the session to *Reducing* (only exposure-reducing orders) instead of halting
it: positions can still be unwound while a human looks. The guard only
reports; the worker decides what to tell the runtime.

Input rows with non-positive or non-finite prices are bad *data*, not a bad
model: they are masked out (score 0, ``valid`` false) and counted, so a single
bad print from market data cannot push a session into Reducing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from trading_workers.inference import model as model_mod

if TYPE_CHECKING:
    from trading_operator.api.session import ModelSpec

REASON_NAN = "nan_output"
REASON_LATENCY = "latency"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard concluded about one or more batches: ``ok`` or ``reduce`` (with the reason)."""

    action: Literal["ok", "reduce"] = "ok"
    reason: str = ""
    detail: str = ""

    @property
    def reduce(self) -> bool:
        return self.action == "reduce"


OK = Verdict()


class Guard:
    """Turns a batch's outputs and latency into a verdict; counts trips per reason."""

    def __init__(self, max_latency_ms: float) -> None:
        if max_latency_ms <= 0:
            raise ValueError("max_latency_ms must be positive")
        self.max_latency_ms = float(max_latency_ms)
        self.trips: dict[str, int] = {REASON_NAN: 0, REASON_LATENCY: 0}

    def check(self, non_finite: int, latency_ms: float) -> Verdict:
        """``non_finite``: outputs that are NaN/inf among rows whose inputs were valid."""
        if non_finite:
            self.trips[REASON_NAN] += 1
            return Verdict("reduce", REASON_NAN, f"{non_finite} non-finite model outputs")
        if latency_ms > self.max_latency_ms:
            self.trips[REASON_LATENCY] += 1
            return Verdict("reduce", REASON_LATENCY,
                           f"batch took {latency_ms:.2f} ms > max {self.max_latency_ms:g} ms")
        return OK


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Scores for every input row, in input order."""

    scores: np.ndarray       # float32 [n]; 0.0 where not valid
    valid: np.ndarray        # bool [n]; inputs usable and output finite
    latency_ms: float        # the slowest batch
    batches: int
    invalid_inputs: int      # rows masked for bad prices (data problem, not a model problem)
    verdict: Verdict         # the first "reduce" verdict among the batches, else OK


def select_device(requested: str) -> torch.device:
    """``cuda`` when asked for and present; otherwise ``cpu`` (a GPU-less node falls back, it does not fail)."""
    if requested == "cuda" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class Predictor:
    """Scores ``[n, window+1]`` price windows in batches of at most ``batch_size`` rows."""

    def __init__(self, net: model_mod.PriceMLP, *, device: torch.device | str = "cpu", batch_size: int = 256,
                 max_latency_ms: float = 50.0, clock: Callable[[], float] = time.perf_counter) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.width = net.input_width
        self.guard = Guard(max_latency_ms)
        self._clock = clock
        self._cuda = self.device.type == "cuda"
        self.net = net.to(self.device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        # Preallocated once: the hot path only copies into these.
        self._host_in = torch.empty((self.batch_size, self.width), dtype=torch.float32, pin_memory=self._cuda)
        self._host_in_np = self._host_in.numpy()
        self._dev_in = (torch.empty((self.batch_size, self.width), dtype=torch.float32, device=self.device)
                        if self._cuda else self._host_in)
        self._host_out = torch.empty((self.batch_size,), dtype=torch.float32, pin_memory=self._cuda)
        self._host_out_np = self._host_out.numpy()

    @classmethod
    def from_spec(cls, spec: ModelSpec, *, clock: Callable[[], float] = time.perf_counter) -> Predictor:
        """Load ``spec.uri`` and place it on ``spec.device`` (or cpu when cuda is absent)."""
        artifact = model_mod.load_uri(spec.uri)
        return cls(artifact.model, device=select_device(spec.device), batch_size=spec.batch_size,
                   max_latency_ms=spec.max_latency_ms, clock=clock)

    def predict(self, prices: np.ndarray) -> BatchResult:
        """Score every row of ``prices`` (``[n, window+1]``, oldest price first)."""
        prices = np.asarray(prices)
        if prices.ndim != 2 or prices.shape[1] != self.width:
            raise ValueError(f"expected prices of shape [n, {self.width}], got {list(prices.shape)}")
        n = prices.shape[0]
        scores = np.zeros(n, dtype=np.float32)
        valid = np.zeros(n, dtype=bool)
        verdict, slowest, batches, invalid_inputs = OK, 0.0, 0, 0
        for lo in range(0, n, self.batch_size):
            hi = min(n, lo + self.batch_size)
            latency_ms, bad_inputs, batch_verdict = self._run_batch(prices[lo:hi], scores[lo:hi], valid[lo:hi])
            slowest = max(slowest, latency_ms)
            invalid_inputs += bad_inputs
            batches += 1
            if batch_verdict.reduce and not verdict.reduce:
                verdict = batch_verdict
        return BatchResult(scores=scores, valid=valid, latency_ms=slowest, batches=batches,
                           invalid_inputs=invalid_inputs, verdict=verdict)

    def _run_batch(self, rows: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> tuple[float, int, Verdict]:
        n = rows.shape[0]
        start = self._clock()
        host_in = self._host_in_np[:n]
        np.copyto(host_in, rows, casting="unsafe")
        # NaN > 0 is False, so this screens NaN, -inf and non-positive prices; the row sum catches +inf.
        ok = (host_in > 0).all(axis=1) & np.isfinite(host_in.sum(axis=1))
        bad_inputs = n - int(np.count_nonzero(ok))
        if bad_inputs:
            host_in[~ok] = 1.0   # a flat window: finite, and its score is discarded below
        with torch.inference_mode():
            if self._cuda:
                dev_in = self._dev_in[:n]
                dev_in.copy_(self._host_in[:n], non_blocking=True)
                self._host_out[:n].copy_(self.net(dev_in), non_blocking=True)
                torch.cuda.synchronize(self.device)
                out = self._host_out_np[:n]
            else:
                out = self.net(self._host_in[:n]).numpy()
        finite = np.isfinite(out)
        good = ok & finite
        np.copyto(scores, np.where(good, out, np.float32(0.0)))
        np.copyto(valid, good)
        latency_ms = (self._clock() - start) * 1000.0
        non_finite = int(np.count_nonzero(ok & ~finite))
        return latency_ms, bad_inputs, self.guard.check(non_finite, latency_ms)
