"""A seeded synthetic price process with structure a small model can learn.

Why synthetic: the default model must be reproducible from a documented
command on a machine with no market data and no network. Each series'
returns follow an AR(1) process with its own coefficient (some series trend,
some mean-revert) and its own volatility; the only way to beat predicting
zero is to infer the coefficient from the window's autocorrelation, which is
exactly the "regime from recent returns" skill the strategy wants. Real
markets are far noisier; the point is a sane, deterministic default and an
honest learned-vs-baseline figure, not alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHI_RANGE = (-0.45, 0.45)    # AR(1) coefficient of returns, per series
VOL_RANGE = (0.001, 0.03)    # per-step return volatility, log-uniform, per series
BURN_IN = 16                 # steps discarded so the AR process reaches its stationary law


@dataclass(frozen=True)
class Dataset:
    """``prices`` ``[N, window+1]`` (oldest first) and ``target`` ``[N]``: the next return over the window RMS."""

    prices: np.ndarray
    target: np.ndarray
    next_return: np.ndarray
    phi: np.ndarray


def price_windows(n: int, window: int, seed: int, start_price: float = 100.0) -> Dataset:
    """``n`` independent series of ``window + 2`` prices: the model's input row plus the next price."""
    rng = np.random.default_rng(seed)
    phi = rng.uniform(*PHI_RANGE, size=n)
    vol = np.exp(rng.uniform(np.log(VOL_RANGE[0]), np.log(VOL_RANGE[1]), size=n))
    steps = BURN_IN + window + 1
    shocks = rng.standard_normal((n, steps)) * vol[:, None] * np.sqrt(1.0 - phi[:, None] ** 2)
    returns = np.empty((n, steps))
    prev = rng.standard_normal(n) * vol
    for t in range(steps):
        prev = phi * prev + shocks[:, t]
        returns[:, t] = prev
    returns = returns[:, BURN_IN:]                     # [n, window + 1]
    start = start_price * np.exp(rng.uniform(-2.0, 2.0, size=n))
    log_prices = np.log(start)[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(returns, axis=1)], axis=1)
    prices = np.exp(log_prices)                         # [n, window + 2]
    inputs = prices[:, : window + 1]
    past = returns[:, :window]
    rms = np.sqrt(np.mean(past * past, axis=1) + 1e-12)
    nxt = returns[:, window]
    target = np.clip(nxt / rms, -8.0, 8.0)
    return Dataset(prices=inputs.astype(np.float32), target=target.astype(np.float32),
                   next_return=nxt.astype(np.float32), phi=phi.astype(np.float32))
