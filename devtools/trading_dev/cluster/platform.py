"""The platform on the real node, as the demo's story drives it (``make demo``'s default runtime).

``ClusterPlatform`` is a context manager, like ``trading_dev.platform.LocalPlatform``, and offers the
story the same seam (``trading_dev.platform.Platform``): ``kubectl``, the namespace its objects go to, and a journal
DSN reachable from this machine. Entering it builds what is missing and starts everything, with a
progress line for each slow step and what it usually takes:

1. binaries: Kubernetes (kubelet, controller-manager, scheduler, kube-proxy, kubectl, kube-apiserver)
   and etcd, built from their Go modules once and cached;
2. images: operator, workers and services (Redis + PostgreSQL), built once per input and cached;
3. cluster: the real single node (``trading_dev.cluster.node``; the machine's one cluster lock);
4. install: the images loaded into the node's containerd, Redis and PostgreSQL as pods, and
   ``helm install`` of the chart into a namespace enforcing the restricted Pod Security profile.

The operator and every worker then run as pods under the real kubelet; the story's session goes to the
release namespace (the chart's default session namespace), where the chart's Redis and PostgreSQL
Services are. The journal is reached through ``kubectl port-forward`` to the PostgreSQL Service.
Leaving it saves every pod's log under ``workdir/pods`` and stops the cluster, which removes
everything it made.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import time
from typing import Any

from trading_dev import kubeconfig, procs
from trading_dev.cluster import deploy, node, rootfs
from trading_dev.controlplane import build, server
from trading_dev.platform import Platform, PlatformError

# What each slow step usually takes on two cores (measured; docs/decisions/0006, "Measurements").
ROUGHLY = {
    "binaries cold": "about 15 min of Go builds, once",
    "images cold": "2-6 min whenever the project's sources changed; the first time also a debootstrap "
                   "(about a minute) and the pinned wheels (torch: several GB to download)",
    "cluster": "about 20 s",
    "install": "2-3 min: most of it 7 GB of images into containerd, then helm install",
}


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def binaries_cached(version: str) -> bool:
    names = [*build.NODE_COMPONENTS, "kube-apiserver"]
    return all(build.binary_path(n, version).exists() for n in names) and build.etcd_path().exists()


class ClusterPlatform(Platform):
    """The chart installed on a real node; ``values`` are helm values over the chart's defaults."""

    namespace = deploy.NAMESPACE
    kubectl_timeout = 120.0

    def __init__(self, workdir: pathlib.Path, kubeconfig_out: pathlib.Path | None = None,
                 values: dict[str, Any] | None = None, gpu: bool = True, progress: bool = True) -> None:
        self.workdir = workdir
        self.kubeconfig_out = kubeconfig_out
        self._published: bytes | None = None
        self.values = values or {}
        self.progress = progress
        self.cluster = node.Cluster(gpu=gpu, progress=progress)
        self.timings: dict[str, float] = {}
        self._forward: subprocess.Popen[bytes] | None = None
        self._dsn = ""

    # ------------------------------------------------------------------ the story's seam

    @property
    def journal_dsn(self) -> str:
        return self._dsn

    @property
    def logs_hint(self) -> str:
        return (f"pods: kubectl --kubeconfig {self.kubeconfig} -n {self.namespace} logs deploy/NAME (saved under "
                f"{self.workdir / 'pods'} at the end); node components: {self.cluster.logs}")

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.cluster.kubeconfig_path

    def kubectl_binary(self) -> str:
        return str(build.binary_path("kubectl", self.cluster.version or build.node_version()))

    # ------------------------------------------------------------------ start

    def _step(self, name: str, started: float) -> None:
        self.timings[name] = time.monotonic() - started
        if self.progress:
            _say(f"    {name} done in {self.timings[name]:.0f}s")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.workdir / "pods", ignore_errors=True)
        version = build.node_version()
        try:
            started = time.monotonic()
            cached = binaries_cached(version)
            self._note(f"binaries: Kubernetes {version}, etcd {build.ETCD_VERSION} - "
                       + ("cached" if cached else f"building ({ROUGHLY['binaries cold']})"))
            build.ensure_binaries(version)
            build.build_node_components(version)
            self._step("binaries", started)

            started = time.monotonic()
            missing = [n for n in ("operator", "workers", "services") if not rootfs.archive_cached(n)]
            self._note("images: operator, workers (torch on CPU), services (Redis, PostgreSQL) - "
                       + (f"building {', '.join(missing)} ({ROUGHLY['images cold']})" if missing else "cached"))
            archives = {n: rootfs.services_archive() if n == "services" else rootfs.image_archive(n)
                        for n in ("operator", "workers", "services")}
            size = sum(a.stat().st_size for a in archives.values()) / 1e9
            self._step("images", started)

            started = time.monotonic()
            self._note(f"cluster: etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet, "
                       f"kube-proxy, CoreDNS on one node ({ROUGHLY['cluster']})")
            self.cluster.start()
            self._step("cluster", started)
            if self.kubeconfig_out is not None:
                self._published = kubeconfig.publish(self.kubeconfig, self.kubeconfig_out)

            started = time.monotonic()
            self._note(f"install: {size:.1f} GB of images into the node's containerd, Redis and PostgreSQL as "
                       f"pods, helm install {deploy.RELEASE} into namespace {self.namespace} (restricted Pod "
                       f"Security) ({ROUGHLY['install']})")
            self.timings.update(deploy.prepare(self.cluster, progress=self.progress, archives=archives))
            proc = deploy.install(self.cluster, self.values)
            if proc.returncode != 0:
                raise PlatformError(f"helm install failed: {proc.stderr.strip()[-2000:]}")
            self._step("install", started)
            if self.progress:
                _say("        " + ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items()
                                           if k.startswith("image ")) + " loaded into containerd")
        except (node.ClusterError, rootfs.ImageBuildError, build.BuildError, subprocess.CalledProcessError) as exc:
            raise PlatformError(str(exc)) from exc
        self._forward_journal()

    def _note(self, message: str) -> None:
        if self.progress:
            _say(message)

    def _forward_journal(self) -> None:
        """``kubectl port-forward`` to the PostgreSQL Service, so the story reads the journal from here."""
        port = server.free_port()
        binary = build.binary_path("kubectl", self.cluster.version)
        log = self.workdir / "port-forward.log"
        with open(log, "wb") as out:
            self._forward = subprocess.Popen(
                [str(binary), f"--kubeconfig={self.kubeconfig}", "-n", self.namespace, "port-forward",
                 "--address", "127.0.0.1", "svc/trading-postgres", f"{port}:5432"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._forward.poll() is not None:
                raise PlatformError(f"kubectl port-forward to PostgreSQL exited: {log.read_text()[-1000:]}")
            if b"Forwarding from" in log.read_bytes():
                self._dsn = f"postgresql://trading@127.0.0.1:{port}/trading"
                return
            time.sleep(0.2)
        raise PlatformError("kubectl port-forward to PostgreSQL did not start within 30s")

    # ------------------------------------------------------------------ stop

    def save_pod_logs(self) -> None:
        """Every container's log in the namespace, under ``workdir/pods`` (the cluster's go with it)."""
        out = self.workdir / "pods"
        out.mkdir(parents=True, exist_ok=True)
        try:
            names = self.kubectl("-n", self.namespace, "get", "pods", "-o", "name").stdout.split()
        except (PlatformError, subprocess.TimeoutExpired):
            return
        for name in names:
            proc = subprocess.run([str(build.binary_path("kubectl", self.cluster.version)),
                                   f"--kubeconfig={self.kubeconfig}", "-n", self.namespace, "logs", name,
                                   "--all-containers", "--timestamps"], capture_output=True, text=True, timeout=60)
            (out / f"{name.split('/', 1)[1]}.log").write_text(proc.stdout + proc.stderr)

    def stop(self) -> None:
        if self._forward is not None:
            procs.stop_group(self._forward, grace=2)
            self._forward = None
        if self.cluster.holds_lock:
            self.save_pod_logs()
        if self.kubeconfig_out is not None and self._published is not None:
            kubeconfig.unpublish(self.kubeconfig_out, self._published)
        self.cluster.stop()
