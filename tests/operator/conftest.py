"""The operator, run as it runs in production (``python -m trading_operator``), against the real control plane."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config

from tests.conftest import Kubectl
from trading_dev.controlplane import server

G, V = "trading.dev", "v1alpha1"


class Api:
    """Thin test helpers over the official client."""

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        api_client = config.new_client_from_config(str(kubeconfig))
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def create(self, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(G, V, ns, plural, body)  # type: ignore[no-any-return]

    def get(self, ns: str, plural: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(G, V, ns, plural, name)  # type: ignore[no-any-return]

    def patch(self, ns: str, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(G, V, ns, plural, name, body)  # type: ignore[no-any-return]

    def events(self, ns: str, name: str) -> list[client.CoreV1Event]:
        return [e for e in self.core.list_namespaced_event(ns).items if e.involved_object.name == name]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
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


@pytest.fixture(scope="session")
def api(control_plane: server.ControlPlane) -> Api:
    return Api(control_plane.kubeconfig_path)


@pytest.fixture(scope="session")
def operator(control_plane: server.ControlPlane, crds_installed: Kubectl,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """The operator process; yields its log file."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = dict(os.environ, KUBECONFIG=str(control_plane.kubeconfig_path),
               TRADING_METRICS_PORT=str(server.free_port()), TRADING_LIVENESS_PORT=str(server.free_port()),
               TRADING_LEASE_NAMESPACE="default", TRADING_RECONCILE_INTERVAL="0.5",
               TRADING_DELETE_TIMEOUT_SECONDS="10")
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "trading_operator", "--log-format", "plain"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        lease = client.CoordinationV1Api(config.new_client_from_config(str(control_plane.kubeconfig_path)))
        wait_for(lambda: lease.read_namespaced_lease("trading-operator", "default").spec.holder_identity,
                 timeout=30, what="the operator to take the lease")
        time.sleep(1.0)  # kopf's watches start right after leadership
        yield log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if os.environ.get("TRADING_TEST_SHOW_OPERATOR_LOG"):
            print(log.read_text()[-20000:])
