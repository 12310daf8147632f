"""The operator, run as it runs in production (``python -m trading_operator``), against the real control plane."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from tests.conftest import Kubectl, running_operator, wait_for  # noqa: F401 - wait_for re-exported
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


@pytest.fixture(scope="session")
def api(control_plane: server.ControlPlane) -> Api:
    return Api(control_plane.kubeconfig_path)


@pytest.fixture(scope="package")
def operator(control_plane: server.ControlPlane, crds_installed: Kubectl,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """The operator for this test package only (see tests.conftest.running_operator)."""
    with running_operator(control_plane, tmp_path_factory) as log:
        yield log
