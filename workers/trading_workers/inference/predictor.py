"""Batched inference on cuda when available (else cpu), and the guard that asks for Reducing.

Why batches: scoring 500 symbols one at a time pays the framework overhead
500 times; one ``[B, window+1]`` matmul chain pays it once. Why preallocated
buffers: the hot path copies each batch into the same (pinned, on cuda) host
tensor and device tensor, and the forward pass writes every intermediate into
buffers sized once for ``batch_size`` (``_FusedMLP``), so no call allocates,
latency is flat and the allocator never shows up in p99.

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


class _FusedMLP:
    """The network's forward pass with every intermediate preallocated and every op in place.

    Same math as ``PriceMLP.forward`` (the tests hold them equal), minus the module
    dispatch and the per-call allocations: at small batches that overhead is most of
    the time, and allocations are what make the tail latency jump.
    """

    def __init__(self, net: model_mod.PriceMLP, batch_size: int, device: torch.device) -> None:
        linears = [m for m in net.net if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            self.weights = [m.weight.detach().t().contiguous().to(device) for m in linears]
            self.biases = [m.bias.detach().clone().to(device) for m in linears]
        window = net.window
        self.returns = torch.empty((batch_size, window), dtype=torch.float32, device=device)
        self.squares = torch.empty((batch_size, window), dtype=torch.float32, device=device)
        self.scale = torch.empty((batch_size, 1), dtype=torch.float32, device=device)
        self.hidden = [torch.empty((batch_size, w.shape[1]), dtype=torch.float32, device=device)
                       for w in self.weights]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[n, window+1]`` prices on the device → ``[n]`` scores (a view of a preallocated buffer)."""
        n = x.shape[0]
        returns = torch.div(x[:, 1:], x[:, :-1], out=self.returns[:n]).log_()
        scale = torch.mean(torch.mul(returns, returns, out=self.squares[:n]), dim=1, keepdim=True,
                           out=self.scale[:n])
        scale.add_(model_mod.EPS).sqrt_()
        h = returns.div_(scale).clamp_(-model_mod.Z_CLIP, model_mod.Z_CLIP)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.addmm(b, h, w, out=self.hidden[i][:n])
            if i < last:
                h.relu_()
        return h[:, 0]


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
        self.net = net.eval()
        self._forward = _FusedMLP(net, self.batch_size, self.device)
        # Preallocated once: the hot path only copies into these (pinned host memory on cuda).
        self._host_in = torch.empty((self.batch_size, self.width), dtype=torch.float32, pin_memory=self._cuda)
        self._host_in_np = self._host_in.numpy()
        self._dev_in = (torch.empty((self.batch_size, self.width), dtype=torch.float32, device=self.device)
                        if self._cuda else self._host_in)
        self._host_out = torch.empty((self.batch_size,), dtype=torch.float32, pin_memory=self._cuda)
        self._warm_up()

    def _warm_up(self) -> None:
        """One full batch of flat windows: first-call kernel setup and page faults happen here, not on quotes."""
        self._host_in.fill_(1.0)
        with torch.inference_mode():
            self._dev_in.copy_(self._host_in)
            self._forward(self._dev_in)
            if self._cuda:
                torch.cuda.synchronize(self.device)

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
        np.copyto(self._host_in_np[:n], rows, casting="unsafe")
        with torch.inference_mode():
            host_in = self._host_in[:n]
            # min > 0 screens zero, negative and NaN prices (NaN propagates); a finite max screens +inf.
            ok = (host_in.amin(dim=1) > 0) & torch.isfinite(host_in.amax(dim=1))
            bad_inputs = n - int(ok.sum())
            if bad_inputs:
                host_in[~ok] = 1.0   # a flat window: finite, and its score is discarded below
            if self._cuda:
                dev_in = self._dev_in[:n]
                dev_in.copy_(host_in, non_blocking=True)
                out = self._host_out[:n]
                out.copy_(self._forward(dev_in), non_blocking=True)
                torch.cuda.synchronize(self.device)
            else:
                out = self._forward(host_in)
            good = ok & torch.isfinite(out)
            n_good = int(good.sum())
            if n_good == n:
                np.copyto(scores, out.numpy())
                valid.fill(True)
            else:
                np.copyto(scores, torch.where(good, out, 0.0).numpy())
                np.copyto(valid, good.numpy())
        latency_ms = (self._clock() - start) * 1000.0
        non_finite = (n - bad_inputs) - n_good
        return latency_ms, bad_inputs, self.guard.check(non_finite, latency_ms)
