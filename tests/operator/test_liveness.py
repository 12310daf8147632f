"""The operator's view of the API server's availability, against a real API server behind a proxy.

``trading_operator.liveness`` counts an executor's silence only while the API server answers the
operator's probe; this test cuts the real connection and checks that the probe notices within its
bounded timeout and that silence is neither counted while it is cut nor for the outage afterwards.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Iterator

import pytest

from tests.fixtures.faults import FaultProxy, kubeconfig_via, to_api_server
from trading_dev.controlplane import server
from trading_operator import kube, liveness

pytestmark = pytest.mark.cluster


@pytest.fixture
def kube_via(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    kube.api_client.cache_clear()
    yield
    monkeypatch.undo()
    kube.api_client.cache_clear()


@pytest.fixture
def proxied(control_plane: server.ControlPlane, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
            kube_via: None) -> Iterator[FaultProxy]:
    proxy = to_api_server(control_plane)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig_via(control_plane, proxy.port, tmp_path / "kubeconfig")))
    try:
        yield proxy
    finally:
        proxy.stop()


async def _until(predicate: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_probe_sees_the_api_server_go_and_come_back(proxied: FaultProxy) -> None:
    watch = liveness.HeartbeatWatch()
    probe = liveness.ApiProbe(watch, lambda: kube.readyz(timeout=1.0), interval=0.2, timeout=1.5)
    probe.ensure_started()
    try:
        await asyncio.sleep(0.5)
        assert watch.silence("ns/s", "hb-1") == 0.0
        await asyncio.sleep(1.0)
        counted = watch.silence("ns/s", "hb-1")
        assert counted is not None and counted >= 1.0  # reachable: silence is counted

        proxied.refuse()
        noticed = await _until(lambda: watch.silence("ns/s", "hb-1") is None, 5.0, "the probe to notice the cut")
        assert noticed < 3.0
        await asyncio.sleep(2.0)
        proxied.heal()
        await _until(lambda: watch.silence("ns/s", "hb-1") is not None, 5.0, "the probe to see the server again")
        after = watch.silence("ns/s", "hb-1")
        assert after is not None and after < 1.0, f"the outage was counted as silence: {after}"
    finally:
        await probe.stop()
