"""Shared fixtures: the real local control plane (one per test session).

The control plane is the same code a person runs with ``make cluster``. If
it cannot start (no Go toolchain, failed build), the tests that need it fail
loudly with the build's message; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config

from trading_dev import procs
from trading_dev.controlplane import server

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"


class Kubectl:
    """kubectl bound to one kubeconfig; returns the CompletedProcess, never raises on a non-zero exit."""

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.ControlPlane]:
    cp = server.ControlPlane(workdir=tmp_path_factory.mktemp("control-plane"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubectl(control_plane: server.ControlPlane) -> Kubectl:
    return Kubectl(control_plane.kubeconfig_path)


@pytest.fixture(scope="session")
def crds_installed(kubectl: Kubectl) -> Kubectl:
    kubectl("apply", "--server-side", "-f", str(CRDS), check=True)
    for crd in sorted(CRDS.glob("*.yaml")):
        kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(crd), check=True)
    return kubectl


@pytest.fixture
def namespace(crds_installed: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (there is no namespace controller, so it is never finalized)."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:5]
    crds_installed("create", "namespace", name, check=True)
    yield name


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll until ``predicate`` returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")


@contextlib.contextmanager
def running_operator(control_plane: server.ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """The operator, run as in production (``python -m trading_operator``); yields its log file.

    Test packages that need it wrap this in a package-scoped fixture of their own conftest (a
    package fixture lives as long as the package that *defines* it), so it runs for those packages
    only and the worker tests, which drive session status themselves, never race a live operator.
    """
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = dict(os.environ, KUBECONFIG=str(control_plane.kubeconfig_path),
               TRADING_METRICS_PORT=str(server.free_port()), TRADING_LIVENESS_PORT=str(server.free_port()),
               TRADING_LEASE_NAMESPACE="default", TRADING_RECONCILE_INTERVAL="0.5",
               TRADING_DELETE_TIMEOUT_SECONDS="10")
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "trading_operator", "--log-format", "plain"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        leases = client.CoordinationV1Api(config.new_client_from_config(str(control_plane.kubeconfig_path)))
        wait_for(lambda: (leases.read_namespaced_lease("trading-operator", "default").spec.holder_identity or "")
                 .endswith(f"-{proc.pid}"), timeout=45, what="this operator to take the lease")
        time.sleep(1.0)  # kopf's watches start right after leadership
        yield log
    finally:
        procs.stop_group(proc, grace=15)
        if os.environ.get("TRADING_TEST_SHOW_OPERATOR_LOG"):
            print(log.read_text()[-20000:])
