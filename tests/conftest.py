"""Shared fixtures: the real local control plane (one per test session).

The control plane is the same code a person runs with ``make cluster``. If
it cannot start (no Go toolchain, failed build), the tests that need it fail
loudly with the build's message; nothing is skipped.
"""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from trading_dev.controlplane import server

# The one fixtures plugin (tests/fixtures): API helper, real servers. Helpers (eventually, builders,
# the operator fixture factory) are imported from tests.fixtures.* by the packages that use them.
pytest_plugins = ["tests.fixtures.api", "tests.fixtures.servers"]

# Old names of helpers that moved to tests/fixtures, for test code written before the move.
from tests.fixtures.operator import running_operator  # noqa: E402, F401
from tests.fixtures.waiting import eventually_sync as wait_for  # noqa: E402, F401

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
