"""Drill fixtures: one whole local platform for the package, one namespace + policy + session per drill.

``platform`` starts the same ``LocalPlatform`` as ``make demo`` (kube-apiserver + etcd, Redis,
PostgreSQL, CRDs, the operator as a subprocess, the local process runtime) once for every drill in
this package, and stops exactly what it started. A part that cannot start fails the drills with
its error; nothing is skipped.

``make_drill(...)`` creates a fresh namespace, a RiskPolicy and a TradingSession (see
``harness.create_drill``) and, by default, waits until the session trades: MarketOpen, the
executor ready and Active, quotes on the bus. The session is deleted when the drill ends (the
operator's finalizer stops its workers), so drills neither interfere nor pile up processes.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.drills.harness import OPERATOR_ENV, Drill, create_drill, namespace_for
from trading_dev.platform import LocalPlatform

STARTUP_TIMEOUT = 90.0  # creation -> trading (workers start as fresh Python processes)


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    started = time.monotonic()
    with LocalPlatform(tmp_path_factory.mktemp("drill-platform"),
                       operator_env={"TRADING_RECONCILE_INTERVAL": "0.5",
                                     "TRADING_DELETE_TIMEOUT_SECONDS": "10", **OPERATOR_ENV}) as p:
        print(f"drill platform started in {time.monotonic() - started:.1f}s; logs in {p.logs}")
        yield p


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed drill's report carries the tails of its operator and executor logs."""
    outcome: Any = yield
    report = outcome.get_result()
    drills: list[Drill] = getattr(item, "_drills", [])
    if report.failed and drills:
        for drill in drills:
            for label, path in (("executor", drill.log_path("executor")), ("risk", drill.log_path("risk"))):
                report.sections.append((f"{drill.key} {label} log tail", _tail(pathlib.Path(path))))
        report.sections.append(("operator log tail", _tail(drills[0].platform.logs / "operator.log")))


def _tail(path: pathlib.Path, chars: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"({exc})"


@pytest.fixture
def make_drill(platform: LocalPlatform, request: pytest.FixtureRequest) -> Iterator[Callable[..., Drill]]:
    """``make_drill(policy=..., spec=..., symbols=..., at=..., speed=..., risk=..., wait="trading")``.

    ``wait``: ``"trading"`` (default) returns once the session trades (``Drill.wait_trading``),
    a phase name waits for that phase, ``None`` returns right after creation.
    """
    made: list[Drill] = []
    request.node._drills = made  # type: ignore[attr-defined]

    def make(*, wait: str | None = "trading", timeout: float = STARTUP_TIMEOUT, **kwargs: Any) -> Drill:
        namespace = namespace_for(request.node.name + (f"-{len(made)}" if made else ""))
        started = time.monotonic()
        drill = create_drill(platform, namespace, **kwargs)
        made.append(drill)
        if wait == "trading":
            drill.wait_trading(timeout)
        elif wait is not None:
            drill.wait_phase(wait, timeout)
        print(f"{drill.key} created and waited for {wait} in {time.monotonic() - started:.1f}s")
        return drill

    yield make
    errors = []
    for drill in made:
        started = time.monotonic()
        try:
            drill.delete()
        except AssertionError as exc:
            errors.append(str(exc))
        print(f"{drill.key} deleted in {time.monotonic() - started:.1f}s")
    assert not errors, errors
