"""What a real node does that the local process runtime only imitated, each seen on a real cluster.

One real cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
containerd, kubelet, kube-proxy) for the module, with the GPU pool's label and
``nvidia.com/gpu`` advertised. The workload is the node's own pause program
(``trading_dev/cluster/pause``), so these tests need no other image.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.cluster_node.conftest import Kube, in_netns, wait_until
from trading_dev.cluster import cleanup, images, network, node
from trading_dev.controlplane import build

pytestmark = [pytest.mark.cluster, pytest.mark.node]

RESTRICTED_POD = {
    "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def container(name: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": images.PAUSE_IMAGE, "imagePullPolicy": "Never", "args": list(args),
            "securityContext": RESTRICTED_CONTAINER, **extra}


def restricted_namespace(kube: Kube, name: str) -> str:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"}}})
    wait_until(lambda: kube("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0,
               30, f"the default ServiceAccount in {name}")
    return name


def pod_phases(kube: Kube, namespace: str, selector: str) -> list[str]:
    return [p["status"].get("phase", "") for p in kube.get("pods", "-n", namespace, "-l", selector)["items"]]


def test_the_node_is_the_gpu_pool(gpu_cluster: node.Cluster, kube: Kube) -> None:
    n = kube.get("node", node.NODE_NAME)
    assert n["metadata"]["labels"][node.GPU_LABEL[0]] == node.GPU_LABEL[1]
    assert n["status"]["allocatable"][node.GPU_RESOURCE] == str(node.GPU_COUNT)
    assert n["status"]["nodeInfo"]["kubeletVersion"] == build.node_version()
    assert n["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}
    assert ready["Ready"] == "True"


def test_deployment_rolls_out_and_its_service_routes(kube: Kube) -> None:
    ns = restricted_namespace(kube, "rollout")
    labels = {"app": "echo"}
    kube.apply(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo", "namespace": ns},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {"securityContext": RESTRICTED_POD, "containers": [container(
                 "echo", "-http", ":8080", ports=[{"containerPort": 8080}],
                 readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1})]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": ns},
         "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}},
    )
    kube("-n", ns, "rollout", "status", "deployment/echo", "--timeout=120s", timeout=130)
    ip = kube.get("service", "echo", "-n", ns)["spec"]["clusterIP"]
    assert ip.startswith(network.SERVICE_CIDR.rsplit(".", 2)[0])
    pods = {p["metadata"]["name"] for p in kube.get("pods", "-n", ns, "-l", "app=echo")["items"]}

    # kube-proxy's iptables rules inside the cluster's namespace route the ClusterIP to both pods.
    def answers() -> set[str]:
        seen = set()
        for _ in range(20):
            proc = in_netns("python3", "-c", f"import urllib.request;print(urllib.request.urlopen("
                            f"'http://{ip}/',timeout=3).read().decode().strip())")
            if proc.returncode == 0:
                seen.add(proc.stdout.strip())
        return seen if seen == pods else set()

    wait_until(answers, 60, f"the Service {ip} answering from both pods {pods}")


def test_deleting_a_deployment_collects_its_replicaset_and_pods(kube: Kube) -> None:
    ns = restricted_namespace(kube, "gc")
    labels = {"app": "sleeper"}
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sleeper", "namespace": ns},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                    "metadata": {"labels": labels},
                    "spec": {"securityContext": RESTRICTED_POD, "containers": [container("sleeper")]}}}})
    kube("-n", ns, "rollout", "status", "deployment/sleeper", "--timeout=120s", timeout=130)
    assert kube.get("replicasets", "-n", ns)["items"]
    kube("-n", ns, "delete", "deployment", "sleeper", "--wait=false")
    wait_until(lambda: not kube.get("replicasets", "-n", ns)["items"] and not kube.get("pods", "-n", ns)["items"],
               90, "the garbage collector to remove the ReplicaSet and its pod")


def test_restricted_pod_security_refuses_a_root_pod(kube: Kube) -> None:
    ns = restricted_namespace(kube, "pss")
    proc = kube("-n", ns, "run", "root", f"--image={images.PAUSE_IMAGE}", "--image-pull-policy=Never",
                check=False)
    assert proc.returncode != 0
    assert "violates PodSecurity" in proc.stderr


def test_inference_like_pod_is_placed_on_the_gpu_pool(kube: Kube) -> None:
    ns = restricted_namespace(kube, "gpu")

    def gpu_pod(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"gpu": "1"}},
                "spec": {"securityContext": RESTRICTED_POD,
                         "nodeSelector": {node.GPU_LABEL[0]: node.GPU_LABEL[1]},
                         "tolerations": [{"key": node.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                         "containers": [container("infer", resources={"limits": {node.GPU_RESOURCE: "1"}})]}}

    kube.apply(gpu_pod("first"))
    wait_until(lambda: kube.get("pod", "first", "-n", ns)["status"].get("phase") == "Running", 90,
               "the GPU pod to run on the GPU pool")
    assert kube.get("pod", "first", "-n", ns)["spec"]["nodeName"] == node.NODE_NAME
    # The node advertises one GPU: a second pod that asks for one waits, as on a real GPU pool.
    kube.apply(gpu_pod("second"))

    def unschedulable() -> str:
        events = kube.get("events", "-n", ns, "--field-selector", "involvedObject.name=second")["items"]
        return " ".join(e["message"] for e in events if e["reason"] == "FailedScheduling")

    message = wait_until(unschedulable, 60, "FailedScheduling of the second GPU pod")
    assert f"Insufficient {node.GPU_RESOURCE}" in message


def test_a_job_pod_reaches_the_api_server_with_its_service_account_token(kube: Kube) -> None:
    ns = restricted_namespace(kube, "token")
    kube.apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "api", "namespace": ns},
                "spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never", "securityContext": RESTRICTED_POD,
                    "containers": [container("api", "-api")]}}}})
    kube("-n", ns, "wait", "--for=condition=Complete", "job/api", "--timeout=120s", timeout=130)
    log = kube("-n", ns, "logs", "job/api").stdout
    assert f"https://{network.KUBERNETES_SERVICE_IP}:443/api 200" in log


def test_a_cronjob_fires_on_its_schedule(kube: Kube) -> None:
    ns = restricted_namespace(kube, "cron")
    kube.apply({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": ns},
                "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never", "securityContext": RESTRICTED_POD,
                    "containers": [container("tick", "-exit-after", "1s")]}}}}}})

    def completed() -> bool:
        jobs = kube.get("jobs", "-n", ns)["items"]
        return any(j["status"].get("succeeded") for j in jobs)

    wait_until(completed, 130, "a Job of the CronJob to complete")
    cron = kube.get("cronjob", "tick", "-n", ns)
    assert cron["status"].get("lastSuccessfulTime")


def test_one_cluster_per_machine(gpu_cluster: node.Cluster) -> None:
    with pytest.raises(node.ClusterBusy, match="already runs"):
        node.Cluster().start()
    assert gpu_cluster.kubeconfig_path.exists()


def test_an_image_is_kept_unpacked_without_its_layer_blobs(gpu_cluster: node.Cluster, kube: Kube) -> None:
    """images.import_archive drops the layer blobs containerd would keep beside the unpacked layers
    (for the workers image, 5.8 GB twice), and containerd's collector frees their disk at once; the
    image still runs (the pods of the other tests run it)."""
    ctr = ["ctr", "--address", str(gpu_cluster.containerd_socket), "-n", "k8s.io"]
    listed = subprocess.run([*ctr, "images", "ls"], capture_output=True, text=True, check=True).stdout
    target = next(line.split()[2] for line in listed.splitlines() if line.startswith(images.PAUSE_IMAGE + " "))
    manifest = json.loads(subprocess.run([*ctr, "content", "get", target], capture_output=True, text=True,
                                         check=True).stdout)
    layers = [layer["digest"] for layer in manifest["layers"]]
    assert layers
    content = subprocess.run([*ctr, "content", "ls", "-q"], capture_output=True, text=True, check=True).stdout
    assert target in content and not set(layers) & set(content.split())
    blobs = cleanup.STATE_DIR / "containerd" / "io.containerd.content.v1.content" / "blobs" / "sha256"
    wait_until(lambda: not any((blobs / d.removeprefix("sha256:")).exists() for d in layers), 30,
               "containerd's collector to remove the layer blobs from disk")
    ns = restricted_namespace(kube, "unpacked")
    kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runs", "namespace": ns},
                "spec": {"securityContext": RESTRICTED_POD, "containers": [container("runs")]}})
    wait_until(lambda: kube.get("pod", "runs", "-n", ns)["status"].get("phase") == "Running", 90,
               "a pod of the image to run")


def test_a_rollout_that_cannot_start_says_why(gpu_cluster: node.Cluster, kube: Kube) -> None:
    """A rollout that times out names the reason its pods did not start: the scheduler's warning, the
    node's pressure and taints, the free disk (CI once saw only "timed out waiting for the condition"
    from a node tainted disk-pressure)."""
    ns = restricted_namespace(kube, "stuck")
    labels = {"app": "stuck"}
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "stuck", "namespace": ns},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                    "metadata": {"labels": labels},
                    "spec": {"securityContext": RESTRICTED_POD, "nodeSelector": {"trading.dev/absent": "yes"},
                             "containers": [container("stuck")]}}}})
    with pytest.raises(node.ClusterError) as refused:
        gpu_cluster.rollout(ns, "stuck", timeout=10)
    said = str(refused.value)
    assert "timed out waiting for the condition" in said
    assert f"node {node.NODE_NAME}: Ready=True, pressure: none" in said
    assert "disk free under" in said and " GiB" in said
    assert "pod stuck-" in said and ": Pending, FailedScheduling: " in said and "node affinity/selector" in said
