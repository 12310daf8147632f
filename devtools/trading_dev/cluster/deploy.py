"""The platform on the real node, as a user deploys it: images, Redis and PostgreSQL, the chart.

Used by the real-cluster chart tests (and by ``make demo`` on the real node when
that lands). The namespace enforces the restricted Pod Security profile, so
everything here must be admitted by it: Redis and PostgreSQL run as the
unprivileged user 10001 of the services image with their data in emptyDirs.
Backups go to a PersistentVolume of the node (a hostPath under the cluster's
state directory, removed with the cluster) bound to the claim the examples
use.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import time
from typing import Any

import yaml

from trading_dev.cluster import cleanup, images, node, rootfs

ROOT = pathlib.Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "trading-platform"
RELEASE = "trading-platform"
NAMESPACE = "trading"
BACKUP_CLAIM = "demo-backups"
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": rootfs.UID, "runAsGroup": rootfs.UID,
                  "fsGroup": rootfs.UID, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _say(message: str) -> None:
    print(f"[platform] {message}", flush=True)


def helm_binary() -> str:
    return subprocess.run(["bash", str(ROOT / "hack" / "install-helm.sh")], capture_output=True, text=True,
                          check=True).stdout.strip()


def load_images(cluster: node.Cluster, archives: dict[str, pathlib.Path] | None = None) -> dict[str, float]:
    """Build (cached) and load the operator, workers and services images (or the ``archives`` given,
    already built); seconds per image."""
    took: dict[str, float] = {}
    found: dict[str, pathlib.Path] = {}
    for name in ("operator", "workers", "services"):
        started = time.monotonic()
        found[name] = (archives or {}).get(name) or (
            rootfs.services_archive() if name == "services" else rootfs.image_archive(name))
        took[name] = time.monotonic() - started
    check_disk(list(found.values()))
    for name, archive in found.items():
        started = time.monotonic()
        cluster.load_image(archive)
        took[name] += time.monotonic() - started
    return took


def disk_needed(archives: list[pathlib.Path], total: int) -> int:
    """Bytes the node's disk must have free to load ``archives``: each unpacked (about its archive's
    size), the largest one's blob besides while it unpacks, the kubelet's reserve (below which it taints
    the node disk-pressure) and 1 GiB for the pods' own files."""
    sizes = [a.stat().st_size for a in archives]
    return sum(sizes) + max(sizes, default=0) + total * node.DISK_RESERVE_PERCENT // 100 + 2**30


def check_disk(archives: list[pathlib.Path]) -> None:
    """Refuse to load images the disk cannot hold, saying how much is missing: a node short of disk
    would take them and then schedule nothing, and say so only as a rollout that timed out."""
    usage = shutil.disk_usage(cleanup.STATE_DIR)
    need = disk_needed(archives, usage.total)
    if usage.free < need:
        raise node.ClusterError(
            f"the node's images need {need / 2**30:.1f} GiB free on the disk of {cleanup.STATE_DIR} and it has "
            f"{usage.free / 2**30:.1f} GiB: free {(need - usage.free) / 2**30:.1f} GiB (old checkouts, their "
            f".venv, archives under {images.images_dir()} no checkout uses) and try again")


def namespace(name: str = NAMESPACE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"}}}


def _service(name: str, port: int, command: list[str], probe: list[str], mount: str) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": name}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "securityContext": RESTRICTED_POD, "automountServiceAccountToken": False,
                      "containers": [{
                          "name": name, "image": rootfs.SERVICES_IMAGE, "imagePullPolicy": "IfNotPresent",
                          "command": command, "ports": [{"containerPort": port}],
                          "readinessProbe": {"exec": {"command": probe}, "periodSeconds": 2},
                          "securityContext": RESTRICTED_CONTAINER,
                          "volumeMounts": [{"name": "data", "mountPath": mount}, {"name": "tmp", "mountPath": "/tmp"}],
                      }],
                      "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
         "spec": {"selector": labels, "ports": [{"port": port, "targetPort": port}]}},
    ]


def services() -> list[dict[str, Any]]:
    """Redis and PostgreSQL under the chart's default names (trading-redis, trading-postgres)."""
    return [
        *_service("trading-redis", 6379,
                  ["redis-server", "--port", "6379", "--protected-mode", "no", "--dir", "/data", "--save", ""],
                  ["redis-cli", "ping"], "/data"),
        *_service("trading-postgres", 5432, ["/usr/local/bin/postgres-entrypoint"],
                  ["/usr/lib/postgresql/15/bin/pg_isready", "-h", "/tmp", "-U", "trading", "-d", "trading"],
                  "/var/lib/postgresql/data"),
    ]


def backup_volume(namespace_name: str = NAMESPACE) -> list[dict[str, Any]]:
    """A node-local PersistentVolume for the backups, bound to the examples' claim."""
    path = cleanup.STATE_DIR / "volumes" / BACKUP_CLAIM
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace_name}-{BACKUP_CLAIM}"},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "node-local",
                  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path), "type": "Directory"},
                  "claimRef": {"namespace": namespace_name, "name": BACKUP_CLAIM}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": BACKUP_CLAIM, "namespace": namespace_name},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "node-local",
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]


def prepare(cluster: node.Cluster, progress: bool = False,
            archives: dict[str, pathlib.Path] | None = None) -> dict[str, float]:
    """Images (``archives`` if given, else built or found cached), the restricted namespace, Redis,
    PostgreSQL and the backup volume; returns timings."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    if progress:
        _say("images: operator, workers (torch on CPU), Redis + PostgreSQL (built once, cached)")
    timings.update({f"image {k}": v for k, v in load_images(cluster, archives).items()})
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace()))
    if progress:
        _say("Redis and PostgreSQL as pods in the restricted namespace")
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump_all(services() + backup_volume()))
    for name in ("trading-redis", "trading-postgres"):
        cluster.rollout(NAMESPACE, name, timeout=180)
    timings["services"] = time.monotonic() - started
    return timings


def helm(cluster: node.Cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), f"--kubeconfig={cluster.kubeconfig_path}", *args],
                          capture_output=True, text=True, timeout=timeout)


def install(cluster: node.Cluster, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """``helm install`` the chart into the restricted namespace and wait for it."""
    values_file = cleanup.STATE_DIR / "values.yaml"
    values_file.write_text(yaml.safe_dump(values or {}))
    proc = helm(cluster, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--values", str(values_file),
                "--wait", "--timeout", "5m")
    if proc.returncode == 0 and (values or {}).get("crds", {}).get("create", True):
        wait_served(cluster)
    return proc


def wait_served(cluster: node.Cluster, timeout: float = 90) -> None:
    """Wait until a RiskPolicy can be applied (server-side dry run) right after the install.

    ``helm install --wait`` returns before that: the CRDs must be Established, and then the API server's
    mutating admission policies (the chart's "who halted" stamps) refuse every create of the new kinds
    with ServiceUnavailable ("Resource kind trading.dev/v1alpha1, Kind=RiskPolicy not found. There can be
    a delay ...") until their type converter has read the group's OpenAPI schema, which it polls every
    5 s. Seen on this node: the demo's first apply failed.
    """
    crds = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in sorted((ROOT / "crds").glob("*.yaml"))]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in crds), timeout=70)
    policy = str(ROOT / "examples" / "riskpolicy.yaml")
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.kubectl("-n", NAMESPACE, "apply", "--dry-run=server", "-f", policy)
            return
        except node.ClusterError as exc:
            if "ServiceUnavailable" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(1)


def main() -> int:
    """``make cluster-platform``: the platform onto the cluster ``make cluster`` runs (another terminal)."""
    import argparse
    import sys

    argparse.ArgumentParser(prog="python -m trading_dev.cluster.deploy",
                            description="The platform onto the cluster `make cluster` runs (in another "
                                        "terminal): images, Redis and PostgreSQL pods, helm install into "
                                        "a namespace enforcing the restricted Pod Security profile "
                                        "(make cluster-platform).").parse_args()

    from trading_dev.controlplane import build

    if not cleanup.PIDS_FILE.exists():
        print("error: no cluster is running; start one with `make cluster` first", file=sys.stderr)
        return 1
    cluster = node.Cluster(version=build.node_version())
    started = time.monotonic()
    try:
        timings = prepare(cluster, progress=True)
        _say(f"helm install {RELEASE} into the restricted namespace {NAMESPACE}")
        proc = install(cluster)
    except (node.ClusterError, rootfs.ImageBuildError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if proc.returncode != 0:
        print(f"error: helm install failed: {proc.stderr}", file=sys.stderr)
        return 1
    took = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    _say(f"installed in {time.monotonic() - started:.0f}s ({took}); next: "
         f"kubectl -n {NAMESPACE} apply -f examples/riskpolicy.yaml -f examples/session-simulated.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
