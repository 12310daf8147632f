"""Fault drills (``make chaos``): the whole local platform under faults, with figures.

Collected only when ``TRADING_CHAOS=1`` (``make chaos`` sets it): they take minutes and are not part
of ``make test``; the defects they found each have a fast test of their own there.
``TRADING_CHAOS_SEED`` picks the fault timings; ``TRADING_CHAOS_OUT`` is where each drill's figures
are written (JSON, one object per drill).

The platform is the demo's ``LocalPlatform`` with two operator replicas (a leader and a standby,
each under the platform's supervisor), each talking to the API server through a ``FaultProxy`` so a
drill can partition one of them.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.drills.conftest import STARTUP_TIMEOUT
from tests.drills.harness import Drill, create_drill, namespace_for
from tests.fixtures.faults import FaultProxy, kubeconfig_via, to_api_server
from trading_dev.platform import LocalPlatform

if os.environ.get("TRADING_CHAOS") != "1":
    collect_ignore_glob = ["test_*.py"]

#: The operator's settings under chaos: a short stale time, so an outage longer than it is a real test.
OPERATOR_ENV = {"TRADING_RECONCILE_INTERVAL": "0.5", "TRADING_DELETE_TIMEOUT_SECONDS": "10",
                "TRADING_EXECUTOR_STALE_SECONDS": "10"}


class ChaosPlatform:
    """The platform, the proxies in front of each operator replica, and the figures of every drill."""

    def __init__(self, platform: LocalPlatform, proxies: list[FaultProxy], seed: int, out: pathlib.Path) -> None:
        self.platform, self.proxies, self.seed, self.out = platform, proxies, seed, out
        self.rng = random.Random(seed)

    def record(self, drill: str, figures: dict[str, Any]) -> None:
        figures = {"drill": drill, "seed": self.seed, **figures}
        print(f"\nCHAOS {json.dumps(figures, default=str)}")
        with self.out.open("a") as fh:
            fh.write(json.dumps(figures, default=str) + "\n")


@pytest.fixture(scope="package")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosPlatform]:
    seed = int(os.environ.get("TRADING_CHAOS_SEED", "1"))
    out = pathlib.Path(os.environ.get("TRADING_CHAOS_OUT", str(tmp_path_factory.mktemp("chaos") / "figures.jsonl")))
    out.parent.mkdir(parents=True, exist_ok=True)
    proxies: list[FaultProxy] = []
    workdir = tmp_path_factory.mktemp("chaos-platform")
    holder: dict[str, LocalPlatform] = {}

    def kubeconfig_for(i: int) -> pathlib.Path:
        cp = holder["p"].cp
        assert cp is not None
        proxy = to_api_server(cp)
        proxies.append(proxy)
        return kubeconfig_via(cp, proxy.port, workdir / f"kubeconfig-operator-{i}")

    platform = LocalPlatform(workdir, operator_env=OPERATOR_ENV, operator_replicas=2,
                             operator_kubeconfig=kubeconfig_for)
    holder["p"] = platform
    with platform:
        yield ChaosPlatform(platform, proxies, seed, out)
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def make_drill(chaos: ChaosPlatform, request: pytest.FixtureRequest) -> Iterator[Callable[..., Drill]]:
    made: list[Drill] = []

    def make(**kwargs: Any) -> Drill:
        drill = create_drill(chaos.platform, namespace_for(request.node.name + f"-{len(made)}"), **kwargs)
        made.append(drill)
        drill.wait_trading(STARTUP_TIMEOUT)
        return drill

    yield make
    for drill in made:
        try:
            drill.delete(timeout=60)
        except AssertionError as exc:
            print(f"{drill.key}: {exc}")
