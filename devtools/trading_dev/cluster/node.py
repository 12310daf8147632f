"""A real single-node Kubernetes cluster: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, containerd, kubelet and kube-proxy, started and stopped by this module.

Every binary but containerd/runc/CNI (Debian's packages) is built from the Go
modules by ``trading_dev.controlplane.build``, at one Kubernetes version
(``build.node_version()``). The facts this follows are in
``shared/REAL-CLUSTER.md``; each quirk of these machines is handled where its
comment says so.

- One cluster per machine: a lock file, and a clear message when it is held.
- Every process runs in the cluster's network namespace (``network``); the
  host reaches the API server at ``network.NODE_IP``.
- Teardown and crash recovery are the same code (``cleanup.clean``), run on
  stop and before every start.
- The node carries the GPU pool's label and advertises ``nvidia.com/gpu`` as
  an extended resource, unless started with ``gpu=False`` (what a user sees
  with no GPU node: inference stays Pending).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import yaml

from trading_dev import procs
from trading_dev.cluster import cleanup, dns, images, network
from trading_dev.controlplane import build, pki, server

NODE_NAME = "trading-node"
GPU_LABEL = ("trading.dev/pool", "gpu")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_COUNT = 1
API_PORT = 6443
LOCK_FILE = pathlib.Path("/run/trading-platform/cluster.lock")
READY_TIMEOUT = 180.0
# kubelet sets these global sysctls on start (setupKernelTunables) with no switch to skip it; it
# runs in its own mount namespace with files bound over the ones whose value would change.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
    "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


# Below this share of its filesystem free, the kubelet reports DiskPressure and the node schedules nothing.
DISK_RESERVE_PERCENT = 1


class ClusterError(RuntimeError):
    """The cluster could not start; the message says why and where the logs are."""


class ClusterBusy(ClusterError):
    """Another cluster already runs on this machine (one per machine)."""


def _progress(message: str) -> None:
    print(f"[cluster] {message}", flush=True)


@dataclass
class Cluster:
    """A running single-node cluster. ``start()`` then ``stop()``; or use ``running()``."""

    gpu: bool = True
    version: str = ""
    progress: bool = False
    url: str = f"https://{network.NODE_IP}:{API_PORT}"
    kubeconfig_path: pathlib.Path = field(default_factory=lambda: cleanup.STATE_DIR / "kubeconfig")
    timings: dict[str, float] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _lock: IO[str] | None = None
    _client_ca: pki.CA | None = None
    _serving_ca: pki.CA | None = None
    _admin_ctx: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ paths

    @property
    def logs(self) -> pathlib.Path:
        return cleanup.STATE_DIR / "logs"

    @property
    def holds_lock(self) -> bool:
        """Whether this object holds the machine's cluster lock (from ``start()`` until ``stop()``)."""
        return self._lock is not None

    @property
    def pki_dir(self) -> pathlib.Path:
        return cleanup.STATE_DIR / "pki"

    @property
    def containerd_socket(self) -> pathlib.Path:
        return cleanup.RUN_DIR / "containerd.sock"

    # ------------------------------------------------------------------ start

    def start(self) -> Cluster:
        self.version = self.version or build.node_version()
        started = time.monotonic()
        self._take_lock()
        try:
            self._say(f"binaries: Kubernetes {self.version}, etcd {build.ETCD_VERSION} (built once, cached)")
            apiserver_bin, etcd_bin = build.ensure_binaries(self.version)
            node_bins = build.build_node_components(self.version)
            pause = images.pause_archive()
            coredns = dns.archive()
            self._mark("binaries", started)
            cleanup.clean()
            for d in (cleanup.STATE_DIR, cleanup.RUN_DIR, self.logs, self.pki_dir):
                d.mkdir(parents=True, exist_ok=True)
            network.create()
            self._write_pki()
            self._say("control plane: etcd, kube-apiserver")
            self._start_etcd(etcd_bin)
            self._start_apiserver(apiserver_bin)
            self._mark("apiserver", started)
            self._start_controllers(node_bins)
            self._say("node: containerd, kubelet, kube-proxy")
            self._start_containerd()
            images.import_archive(pause, str(self.containerd_socket))
            images.import_archive(coredns, str(self.containerd_socket))
            self._start_kubelet(node_bins["kubelet"])
            self._start_proxy(node_bins["kube-proxy"])
            self._wait_node_ready()
            if self.gpu:
                self._advertise_gpu()
            self._wait_default_service_account()
            self._start_dns()
            self._mark("ready", started)
            self._say(f"node {NODE_NAME} Ready in {self.timings['ready']:.1f}s")
        except BaseException:
            self.stop()
            raise
        return self

    def _say(self, message: str) -> None:
        if self.progress:
            _progress(message)

    def _mark(self, name: str, since: float) -> None:
        self.timings[name] = time.monotonic() - since

    def _take_lock(self) -> None:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        lock = open(LOCK_FILE, "a+")  # noqa: SIM115 - held for the cluster's lifetime
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise ClusterBusy(f"a cluster already runs on this machine ({holder}; lock {LOCK_FILE}); "
                              "stop it first (Ctrl-C in its terminal) - one cluster per machine") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        self._lock = lock

    def _write_pki(self) -> None:
        self._serving_ca, self._client_ca = pki.CA("trading-cluster-serving-ca"), pki.CA("trading-cluster-client-ca")
        d = self.pki_dir
        self._serving_ca.pair.write(d, "serving-ca")
        self._client_ca.pair.write(d, "client-ca")
        self._serving_ca.serving(
            ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local", "localhost"],
            ["127.0.0.1", network.NODE_IP, network.KUBERNETES_SERVICE_IP]).write(d, "apiserver")
        self._serving_ca.serving([NODE_NAME, "localhost"], ["127.0.0.1", network.NODE_IP]).write(d, "kubelet")
        self._client_ca.client("kube-apiserver-kubelet-client", ["system:masters"]).write(d, "apiserver-kubelet")
        pki.signing_key().write(d, "sa")
        users = {
            "admin": ("admin", ["system:masters"]),
            "controller-manager": ("system:kube-controller-manager", []),
            "scheduler": ("system:kube-scheduler", []),
            "kubelet": (f"system:node:{NODE_NAME}", ["system:nodes"]),
            "proxy": ("system:kube-proxy", []),
        }
        for stem, (user, groups) in users.items():
            pair = self._client_ca.client(user, groups)
            self._write_kubeconfig(d / f"{stem}.kubeconfig", pair, user)
        admin_crt, admin_key = self._client_ca.client("admin", ["system:masters"]).write(d, "admin")
        ctx = ssl.create_default_context(cafile=str(d / "serving-ca.crt"))
        ctx.load_cert_chain(str(admin_crt), str(admin_key))
        self._admin_ctx = ctx
        self._write_kubeconfig(self.kubeconfig_path, self._client_ca.client("admin", ["system:masters"]), "admin")

    def _write_kubeconfig(self, path: pathlib.Path, pair: pki.KeyPair, user: str) -> None:
        assert self._serving_ca is not None
        path.write_text(yaml.safe_dump(server.kubeconfig(self.url, self._serving_ca.pair.cert_pem, pair, user)))
        path.chmod(0o600)

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: list[str], netns: bool = True) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        cmd = network.in_netns(argv) if netns else argv
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._procs[name] = proc
        cleanup.record_pid(name, proc.pid)

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.returncode}; log tail:\n{self._tail(name)}")

    def _tail(self, name: str, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return (self.logs / f"{name}.log").read_text(errors="replace")[-chars:]
        return ""

    def _wait(self, what: str, check: object, timeout: float = READY_TIMEOUT, log: str = "") -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if check():  # type: ignore[operator]
                    return
            except Exception as exc:
                last = str(exc)
            time.sleep(0.2)
        tail = self._tail(log) if log else ""
        raise ClusterError(f"{what} not ready after {timeout:.0f}s ({last}); log tail:\n{tail}")

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5, context=self._admin_ctx) as resp:
            return json.loads(resp.read())

    def api(self, method: str, path: str, body: object, content_type: str = "application/json") -> Any:
        req = urllib.request.Request(f"{self.url}{path}", method=method, data=json.dumps(body).encode(),
                                     headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=10, context=self._admin_ctx) as resp:
            return json.loads(resp.read())

    def _start_etcd(self, etcd: pathlib.Path) -> None:
        url = "http://127.0.0.1:2379"
        self._spawn("etcd", [
            str(etcd), "--data-dir", str(cleanup.STATE_DIR / "etcd"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "default=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level", "warn",
        ])

    def _start_apiserver(self, apiserver: pathlib.Path) -> None:
        d = self.pki_dir
        self._spawn("kube-apiserver", [
            str(apiserver), "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0", f"--advertise-address={network.NODE_IP}", f"--secure-port={API_PORT}",
            f"--cert-dir={d}", f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'client-ca.crt'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={network.SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={d / 'sa.crt'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--kubelet-client-certificate={d / 'apiserver-kubelet.crt'}",
            f"--kubelet-client-key={d / 'apiserver-kubelet.key'}",
            f"--kubelet-certificate-authority={d / 'serving-ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true", "--v=0",
        ])
        self._wait("kube-apiserver", self._apiserver_ready, log="kube-apiserver")

    def _apiserver_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/readyz", timeout=5, context=self._admin_ctx) as resp:
            return resp.status == 200

    def _start_controllers(self, bins: dict[str, pathlib.Path]) -> None:
        d = self.pki_dir
        cm = d / "controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            str(bins["kube-controller-manager"]), f"--kubeconfig={cm}",
            f"--authentication-kubeconfig={cm}", f"--authorization-kubeconfig={cm}",
            "--bind-address=127.0.0.1", "--leader-elect=false",
            f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={d / 'serving-ca.crt'}",
            "--use-service-account-credentials=true", f"--service-cluster-ip-range={network.SERVICE_CIDR}",
            "--v=0",
        ])
        sched = d / "scheduler.kubeconfig"
        self._spawn("kube-scheduler", [
            str(bins["kube-scheduler"]), f"--kubeconfig={sched}",
            f"--authentication-kubeconfig={sched}", f"--authorization-kubeconfig={sched}",
            "--bind-address=127.0.0.1", "--leader-elect=false", "--v=0",
        ])

    def _start_containerd(self) -> None:
        state, run = cleanup.STATE_DIR, cleanup.RUN_DIR
        cni_conf = state / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-trading.conflist").write_text(json.dumps(network.cni_config(state / "cni" / "ipam")))
        cni_bin = "/usr/lib/cni" if os.path.isdir("/usr/lib/cni") else "/opt/cni/bin"
        config = f"""version = 2
root = "{state / 'containerd'}"
state = "{run / 'containerd'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{state / 'containerd-opt'}"

[plugins."io.containerd.gc.v1.scheduler"]
  # Every deletion starts a collection: the layer blobs images.import_archive drops free their disk at once.
  deletion_threshold = 1

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE on these machines: a negative oom_score_adj fails, so clamp it.
  restrict_oom_score_adj = true
  # No AppArmor in this kernel.
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{run / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"""
        path = state / "containerd.toml"
        path.write_text(config)
        self._spawn("containerd", ["containerd", "--config", str(path)])
        self._wait("containerd", lambda: subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "version"], capture_output=True).returncode == 0,
            timeout=30, log="containerd")

    def _start_kubelet(self, kubelet: pathlib.Path) -> None:
        state, d = cleanup.STATE_DIR, self.pki_dir
        root = state / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        # The kubelet mounts pod volumes in its own mount namespace; a shared bind mount of its root
        # directory carries them to containerd's (the machine's) mount namespace.
        subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
        subprocess.run(["mount", "--make-rshared", str(root)], check=True)
        for cgroup in cleanup.CGROUP_FS.iterdir():
            if (cgroup / "cgroup.procs").exists():
                (cgroup / cleanup.CGROUP_ROOT).mkdir(exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(d / "client-ca.crt")}},
            "authorization": {"mode": "Webhook"},
            # cgroup v1 only on these machines: allowed with failCgroupV1: false (see the decision record).
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{cleanup.CGROUP_ROOT}",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "tlsCertFile": str(d / "kubelet.crt"), "tlsPrivateKeyFile": str(d / "kubelet.key"),
            "healthzBindAddress": "127.0.0.1", "readOnlyPort": 0,
            "clusterDomain": "cluster.local", "clusterDNS": [dns.DNS_IP],
            "failSwapOn": False,
            "podLogsDir": str(state / "pod-logs"),
            "resolvConf": str(state / "resolv.conf"),
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": f"{DISK_RESERVE_PERCENT}%",
                             "imagefs.available": f"{DISK_RESERVE_PERCENT}%"},
            # A moment short of disk (an image unpacking) taints the node disk-pressure for this long after.
            "evictionPressureTransitionPeriod": "30s",
            "serializeImagePulls": False,
            "nodeStatusReportFrequency": "10s",
        }
        (state / "resolv.conf").write_text("search cluster.local\noptions ndots:5\n")
        path = state / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        sysctl_dir = state / "sysctl"
        sysctl_dir.mkdir(exist_ok=True)
        binds = []
        for key, value in KUBELET_SYSCTLS.items():
            target = pathlib.Path("/proc/sys") / key
            if target.exists() and target.read_text().strip() != value:
                copy = sysctl_dir / key.replace("/", ".")
                copy.write_text(target.read_text())
                binds.append(f"mount --bind {copy} {target}")
        labels = f"{GPU_LABEL[0]}={GPU_LABEL[1]}" if self.gpu else ""
        argv = [
            str(kubelet), f"--config={path}", f"--kubeconfig={d / 'kubelet.kubeconfig'}",
            f"--root-dir={root}", f"--hostname-override={NODE_NAME}", f"--node-ip={network.NODE_IP}",
            *([f"--node-labels={labels}"] if labels else []), "--v=1",
        ]
        script = " && ".join(["mount --make-rprivate /proc", *binds, 'exec "$@"'])
        self._spawn("kubelet", ["unshare", "--mount", "--propagation", "unchanged", "--",
                                "/bin/sh", "-c", script, "kubelet", *argv])

    def _start_proxy(self, proxy: pathlib.Path) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.pki_dir / "proxy.kubeconfig")},
            "mode": "iptables", "hostnameOverride": NODE_NAME, "clusterCIDR": network.POD_CIDR,
            # No CAP_SYS_RESOURCE: keep kube-proxy's own oom_score_adj (its default is -999).
            "oomScoreAdj": 0,
            # The conntrack table size and timeouts are global: leave the machine's values alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"masqueradeAll": True},
            "metricsBindAddress": "127.0.0.1:10249",
        }
        path = cleanup.STATE_DIR / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(proxy), f"--config={path}", "--v=0"])

    def _node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{NODE_NAME}")
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _wait_node_ready(self) -> None:
        self._wait(f"node {NODE_NAME}", self._node_ready, log="kubelet")

    def _advertise_gpu(self) -> None:
        """The GPU pool's extended resource, advertised the documented way (a node status patch)."""
        path = f"/status/capacity/{GPU_RESOURCE.replace('/', '~1')}"
        self.api("PATCH", f"/api/v1/nodes/{NODE_NAME}/status",
                 [{"op": "add", "path": path, "value": str(GPU_COUNT)}], "application/json-patch+json")

        def allocatable() -> bool:
            node = self._get(f"/api/v1/nodes/{NODE_NAME}")
            return GPU_RESOURCE in node["status"].get("allocatable", {})

        self._wait(f"{GPU_RESOURCE} on {NODE_NAME}", allocatable, timeout=30)

    def _wait_default_service_account(self) -> None:
        self._wait("the default ServiceAccount",
                   lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default"), timeout=60,
                   log="kube-controller-manager")

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        """kubectl of the cluster's version as its admin; raises ClusterError on failure."""
        binary = build.binary_path("kubectl", self.version)
        proc = subprocess.run([str(binary), f"--kubeconfig={self.kubeconfig_path}", *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def rollout(self, namespace: str, deployment: str, timeout: int) -> None:
        """Wait for a Deployment's rollout; on a timeout the error says why its pods did not start
        (``diagnose``), not only that they did not."""
        try:
            self.kubectl("-n", namespace, "rollout", "status", f"deployment/{deployment}", f"--timeout={timeout}s",
                         timeout=timeout + 10)
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n{self.diagnose(namespace)}") from None

    def diagnose(self, namespace: str) -> str:
        """What keeps pods from running: the node's taints and pressure conditions, the free disk of its
        state directory, and each pod of ``namespace`` that is not ready with its latest warning."""
        lines = []
        free = shutil.disk_usage(cleanup.STATE_DIR).free
        lines.append(f"disk free under {cleanup.STATE_DIR}: {free / 2**30:.1f} GiB")
        try:
            nodes = json.loads(self.kubectl("get", "nodes", "-o", "json", timeout=30))["items"]
            for item in nodes:
                taints = [f"{t['key']}:{t['effect']}" for t in item["spec"].get("taints", [])]
                pressure = [c["type"] for c in item["status"].get("conditions", [])
                            if c["type"].endswith("Pressure") and c["status"] == "True"]
                ready = [c["status"] for c in item["status"].get("conditions", []) if c["type"] == "Ready"]
                lines.append(f"node {item['metadata']['name']}: Ready={''.join(ready) or '?'}, "
                             f"pressure: {', '.join(pressure) or 'none'}, taints: {', '.join(taints) or 'none'}")
            pods = json.loads(self.kubectl("-n", namespace, "get", "pods", "-o", "json", timeout=30))["items"]
            events = json.loads(self.kubectl("-n", namespace, "get", "events", "-o", "json", timeout=30))["items"]
            for pod in pods:
                name = pod["metadata"]["name"]
                if any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])):
                    continue
                warnings = [e for e in events if e["involvedObject"].get("name") == name and e["type"] == "Warning"]
                last = max(warnings, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "", default=None)
                said = f"{last['reason']}: {last['message']}" if last else "no warning event"
                lines.append(f"pod {name}: {pod['status'].get('phase')}, {said}")
        except (ClusterError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            lines.append(f"(the API server did not say more: {exc})")
        return "\n".join(lines)

    def load_image(self, archive: pathlib.Path) -> None:
        """Load a docker archive into the node's containerd (pods use it with imagePullPolicy Never/IfNotPresent)."""
        images.import_archive(archive, str(self.containerd_socket))

    def _start_dns(self) -> None:
        self._say("DNS: CoreDNS as kube-system/coredns")
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(dns.manifests()))
        self.rollout(dns.NAMESPACE, "coredns", timeout=120)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop every component, then remove everything the cluster made (``cleanup.clean``)."""
        order = ["kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager", "containerd",
                 "kube-apiserver", "etcd"]
        for name in order:
            proc = self._procs.pop(name, None)
            # kube-apiserver may ignore SIGTERM for tens of seconds with clients attached: bounded wait.
            procs.stop_group(proc, grace=5)
        if self._lock is not None:
            cleanup.clean()
            self._lock.close()
            self._lock = None


@contextlib.contextmanager
def running(gpu: bool = True, progress: bool = False) -> Iterator[Cluster]:
    """A real single-node cluster for the duration of a ``with`` block."""
    cluster = Cluster(gpu=gpu, progress=progress)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
