"""Fixtures of the deployment tests: helm (built by the project's own script) and rendering helpers."""

from __future__ import annotations

import pathlib
import subprocess
import tempfile
import uuid
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

CHART = ROOT / "charts" / "trading-platform"

#: Values that turn on everything that is off by default (the "non-default" render).
NON_DEFAULT: dict[str, Any] = {
    "rbac": {"scope": "namespace"},
    "crds": {"create": False},
    "operator": {"replicas": 3, "verbose": True, "image": {"digest": "sha256:" + "ab" * 32}},
    "workers": {"journal": {"dsnSecret": {"name": "trading-journal"}}},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "workerPodMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "runbookBaseUrl": "https://runbooks.example.com/trading"},
        "dashboard": {"enabled": True},
    },
    "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
}


class Helm:
    """The helm binary; every call returns the CompletedProcess and never raises on a non-zero exit."""

    def __init__(self, binary: pathlib.Path) -> None:
        self.binary = binary

    def __call__(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
        return proc

    def values_file(self, values: dict[str, Any] | None) -> str:
        handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)  # noqa: SIM115 - path outlives it
        with handle:
            yaml.safe_dump(values or {}, handle)
        return handle.name

    def template_text(self, values: dict[str, Any] | None = None, release: str = "rel",
                      namespace: str = "trading", *extra: str) -> str:
        proc = self("template", release, str(CHART), "--namespace", namespace,
                    "--values", self.values_file(values), *extra, check=True)
        return proc.stdout

    def template(self, values: dict[str, Any] | None = None, release: str = "rel",
                 namespace: str = "trading", *extra: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.template_text(values, release, namespace, *extra)) if d]


@pytest.fixture(scope="session")
def helm() -> Helm:
    """helm from hack/install-helm.sh: cached, or built with `go install` (fails loudly, never skips)."""
    proc = subprocess.run(["bash", str(ROOT / "hack" / "install-helm.sh")], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise AssertionError(f"hack/install-helm.sh failed:\n{proc.stderr}")
    return Helm(pathlib.Path(proc.stdout.strip().splitlines()[-1]))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)
            and (namespace is None or d["metadata"].get("namespace") == namespace)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def dumps(docs: list[dict[str, Any]]) -> str:
    return "\n---\n".join(yaml.safe_dump(d) for d in docs)
