"""Fixtures of the real-node tests: a real single-node cluster (``make cluster``'s code) per module.

Only one cluster can run on a machine, so each module that needs one starts its
own and stops it at the module's end. If it cannot start (no root, a build
failure, a kubelet that refuses the machine), the tests fail with its message.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from trading_dev.cluster import network, node
from trading_dev.controlplane import build


class Kube:
    """kubectl of the cluster's own version, bound to its admin kubeconfig."""

    def __init__(self, kubeconfig: str, version: str = "") -> None:
        self.binary = str(build.binary_path("kubectl", version or build.node_version()))
        self.kubeconfig = kubeconfig

    @classmethod
    def of(cls, cluster: node.Cluster) -> Kube:
        return cls(str(cluster.kubeconfig_path), cluster.version)

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, *docs: dict[str, Any], namespace: str = "") -> None:
        ns = ["-n", namespace] if namespace else []
        self(*ns, "apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def get(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json").stdout)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (AssertionError, node.ClusterError) as exc:
            last = str(exc)
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r:.1500}")


def in_netns(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command in the cluster's network namespace (where Service addresses are routed)."""
    return subprocess.run(network.in_netns(list(argv)), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[node.Cluster]:
    with node.running(gpu=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def kube(gpu_cluster: node.Cluster) -> Kube:
    return Kube.of(gpu_cluster)
