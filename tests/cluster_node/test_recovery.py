"""Crash recovery, the clean teardown, and the node without a GPU pool.

A cluster whose ``make cluster`` process is killed with SIGKILL leaves its
components, containers, mounts, cgroups and network namespace behind; the
next start must clean all of it. Then that next cluster runs without the GPU
resource (``make cluster CLUSTER_ARGS=--no-gpu``): an inference pod waits,
and the scheduler says why. Its stop must leave nothing on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.cluster_node.conftest import Kube, wait_until
from trading_dev.cluster import cleanup, images, node

pytestmark = [pytest.mark.cluster, pytest.mark.node]


def test_a_killed_cluster_is_cleaned_by_the_next_start_and_a_stop_leaves_nothing(tmp_path: os.PathLike[str]) -> None:
    kubeconfig = os.path.join(tmp_path, "kubeconfig")
    log = open(os.path.join(tmp_path, "cluster.log"), "w+")  # noqa: SIM115
    crashed = subprocess.Popen([sys.executable, "-m", "trading_dev.cluster", "--kubeconfig", kubeconfig],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready() -> bool:
            log.seek(0)
            text = log.read()
            assert crashed.poll() is None, f"make cluster exited with {crashed.returncode}:\n{text[-3000:]}"
            return "[cluster] ready" in text

        wait_until(ready, 600, "the first cluster")
        # A pod, so the crash leaves containers, mounts, cgroups and a pod network namespace behind.
        kube = Kube(kubeconfig)
        kube("run", "left-behind", f"--image={images.PAUSE_IMAGE}", "--image-pull-policy=Never")
        wait_until(lambda: kube.get("pod", "left-behind")["status"].get("phase") == "Running", 90, "a pod")
    finally:
        os.kill(crashed.pid, signal.SIGKILL)  # only the python process: its components live on
        crashed.wait()
        log.close()
    assert any(item.startswith("process") for item in cleanup.leftovers())
    assert any(item.startswith("cgroup") for item in cleanup.leftovers())

    with node.running(gpu=False) as cluster:
        kube = Kube.of(cluster)
        n = kube.get("node", node.NODE_NAME)
        assert node.GPU_RESOURCE not in n["status"]["allocatable"]
        assert node.GPU_LABEL[0] not in n["metadata"]["labels"]
        assert not kube.get("pods", "-n", "default")["items"], "the crashed cluster's pod came back"
        kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "inference", "namespace": "default"},
                    "spec": {"nodeSelector": {node.GPU_LABEL[0]: node.GPU_LABEL[1]},
                             "containers": [{"name": "infer", "image": images.PAUSE_IMAGE,
                                             "imagePullPolicy": "Never",
                                             "resources": {"limits": {node.GPU_RESOURCE: "1"}}}]}})

        def why() -> str:
            events = kube.get("events", "--field-selector", "involvedObject.name=inference")["items"]
            return " ".join(e["message"] for e in events if e["reason"] == "FailedScheduling")

        message = wait_until(why, 60, "FailedScheduling of the inference pod")
        assert "0/1 nodes are available" in message
        assert kube.get("pod", "inference")["status"]["phase"] == "Pending"
    assert cleanup.leftovers() == []
