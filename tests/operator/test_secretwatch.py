"""The operator's metadata-only Secret watch (trading_operator.secretwatch) against the real API server:
versions follow writes, a change wakes the sessions that use the Secret, and no Secret data ever
reaches the operator (the API server answers PartialObjectMetadata)."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Iterator

import pytest

from tests.conftest import Kubectl
from trading_dev.controlplane import server
from trading_operator import kube, secretwatch

pytestmark = pytest.mark.cluster
VALUE = "s3cr3t-value-never-in-the-operator"


@pytest.fixture
def kubeconfig(control_plane: server.ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    kube.api_client.cache_clear()
    yield control_plane.kubeconfig_path
    kube.api_client.cache_clear()


def _rv(kubectl: Kubectl, ns: str, name: str) -> str:
    return str(json.loads(kubectl("get", "secret", name, "-n", ns, "-o", "json", check=True).stdout)
               ["metadata"]["resourceVersion"])


def test_versions_follow_writes_and_wake_the_sessions_that_use_them(kubeconfig: pathlib.Path, crds_installed: Kubectl,
                                                                    namespace: str) -> None:
    kubectl = crds_installed
    kubectl("create", "secret", "generic", "keys", "-n", namespace, f"--from-literal=k={VALUE}", check=True)

    async def scenario() -> None:
        watch = secretwatch.SecretVersions()
        woken: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        assert watch.versions(namespace, ["keys"]) is None  # before the first list: unknown, never "changed"
        await watch.start([namespace], on_change=lambda ns, s: woken.put_nowait((ns, s)))
        try:
            await steps(watch, woken)
        finally:
            watch.stop()

    async def steps(watch: secretwatch.SecretVersions, woken: asyncio.Queue[tuple[str, str]]) -> None:
        assert watch.synced
        assert watch.versions(namespace, ["keys", "missing"]) == {"keys": _rv(kubectl, namespace, "keys"),
                                                                 "missing": secretwatch.ABSENT}
        watch.used_by(namespace, "session-a", ["keys"])
        watch.used_by(namespace, "session-b", ["other"])

        rotated = kubectl("create", "secret", "generic", "keys", "-n", namespace, "--from-literal=k=rotated",
                          "--dry-run=client", "-o", "yaml", check=True).stdout
        await asyncio.to_thread(kubectl, "apply", "-f", "-", input=rotated, check=True)
        assert await asyncio.wait_for(woken.get(), 10) == (namespace, "session-a")
        assert watch.versions(namespace, ["keys"]) == {"keys": _rv(kubectl, namespace, "keys")}
        assert woken.empty()  # session-b uses another Secret

        await asyncio.to_thread(kubectl, "delete", "secret", "keys", "-n", namespace, check=True)
        assert await asyncio.wait_for(woken.get(), 10) == (namespace, "session-a")
        assert watch.versions(namespace, ["keys"]) == {"keys": secretwatch.ABSENT}

    asyncio.run(scenario())


def test_the_api_server_sends_metadata_only(kubeconfig: pathlib.Path, crds_installed: Kubectl, namespace: str) -> None:
    crds_installed("create", "secret", "generic", "keys", "-n", namespace, f"--from-literal=k={VALUE}", check=True)
    watch = secretwatch.SecretVersions()
    raw = watch._request(namespace, [], secretwatch._META_LIST, 30.0).read()
    body = json.loads(raw)
    assert body["kind"] == "PartialObjectMetadataList" and body["items"]
    assert all("data" not in item and "stringData" not in item for item in body["items"])
    assert VALUE.encode() not in raw and b"czNjcjN0" not in raw  # neither plain nor base64


def test_a_forbidden_list_disables_rotation_and_says_why(kubeconfig: pathlib.Path, crds_installed: Kubectl,
                                                         namespace: str) -> None:
    """An identity without list on Secrets (the chart's rotation.enabled=false): the API server's 403."""
    kube.api_client().set_default_header("Impersonate-User", "no-secrets-for-me")
    watch = secretwatch.SecretVersions()
    asyncio.run(watch.start([namespace], on_change=lambda ns, s: None))
    assert not watch.synced and watch.versions(namespace, ["keys"]) is None
    assert watch.disabled is not None and "403" in watch.disabled, watch.disabled
