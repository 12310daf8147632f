"""Start kube-apiserver and etcd on free loopback ports, and stop them cleanly.

Used by people (``make cluster``: foreground, Ctrl-C stops it, kubeconfig
in ``.dev/kubeconfig``) and by the tests (a pytest session fixture), with
the same code. No kubelet, no controller-manager: Deployments exist as
objects; the local process runtime (``trading_dev.runtime``) plays the
kubelet's part for the demo.

Everything lives in one temporary directory, removed on stop, and every
process is started in its own process group and stopped by its pid.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import yaml

from trading_dev import procs
from trading_dev.controlplane import build, pki

READY_TIMEOUT = 60.0
AUDIT_POLICY = pathlib.Path(__file__).with_name("audit-policy.yaml")


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message says why and where the logs are."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubeconfig(server: str, ca_pem: bytes, client: pki.KeyPair, user: str) -> dict[str, object]:
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(client.cert_pem),
                                           "client-key-data": b64(client.key_pem)}}],
        "contexts": [{"name": user, "context": {"cluster": "local", "user": user, "namespace": "default"}}],
        "current-context": user,
    }


@dataclass
class ControlPlane:
    """A running kube-apiserver + etcd pair."""

    workdir: pathlib.Path
    keep_workdir: bool = False
    url: str = ""
    kubeconfig_path: pathlib.Path = field(default_factory=pathlib.Path)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _client_ca: pki.CA | None = None
    _serving_ca: pki.CA | None = None

    @property
    def pids(self) -> list[int]:
        """The running servers' process ids (etcd, kube-apiserver): what a benchmark counts the CPU of."""
        return [p.pid for p in self._procs if p.poll() is None]

    @property
    def audit_log(self) -> pathlib.Path:
        """The API server's audit log (JSON lines), written under ``audit-policy.yaml``."""
        return self.workdir / "audit.log"

    # ------------------------------------------------------------------ start

    def start(self) -> ControlPlane:
        apiserver_bin, etcd_bin = build.ensure_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki_dir = self.workdir / "pki"
        pki_dir.mkdir(exist_ok=True)
        self._serving_ca, self._client_ca = pki.CA("trading-dev-serving-ca"), pki.CA("trading-dev-client-ca")
        serving_ca_crt, _ = self._serving_ca.pair.write(pki_dir, "serving-ca")
        client_ca_crt, _ = self._client_ca.pair.write(pki_dir, "client-ca")
        serving_crt, serving_key = self._serving_ca.serving(
            ["localhost", "kubernetes", "kubernetes.default"], ["127.0.0.1"]).write(pki_dir, "apiserver")
        sa_pub, sa_key = pki.signing_key().write(pki_dir, "sa")

        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", [
            str(etcd_bin), "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self._wait(f"{etcd_url}/health", "etcd", None)
        self._spawn("kube-apiserver", [
            str(apiserver_bin),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--cert-dir={pki_dir}",
            f"--tls-cert-file={serving_crt}", f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={client_ca_crt}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://localhost",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            # No controller-manager creates service-account tokens, as in envtest.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            # No Pod can route to the loopback address this server advertises, and 1.37 refuses to
            # publish it as the `kubernetes` Service's endpoint: publish none, as envtest does.
            "--endpoint-reconciler-type=none",
            # Who wrote what to the platform's resources (audit-policy.yaml, docs/security.md).
            f"--audit-policy-file={AUDIT_POLICY}", f"--audit-log-path={self.audit_log}", "--audit-log-mode=batch",
            "--audit-log-maxsize=100", "--audit-log-maxbackup=1",
            "--v=0",
        ])
        self.url = f"https://127.0.0.1:{api_port}"
        admin = self._client_ca.client("admin", ["system:masters"])
        admin_crt, admin_key = admin.write(pki_dir, "admin")
        ctx = ssl.create_default_context(cafile=str(serving_ca_crt))
        ctx.load_cert_chain(str(admin_crt), str(admin_key))
        self._wait(f"{self.url}/readyz", "kube-apiserver", ctx)
        self.kubeconfig_path = self.write_kubeconfig(self.workdir / "kubeconfig", admin, "admin")
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._procs.append(proc)

    def _wait(self, url: str, name: str, ctx: ssl.SSLContext | None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    self.stop()
                    raise ControlPlaneError(f"{proc.args!r:.80} exited with {proc.returncode}; "
                                            f"see logs in {self.workdir}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except Exception as exc:
                last = str(exc)
            time.sleep(0.1)
        log = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise ControlPlaneError(f"{name} not ready after {READY_TIMEOUT:.0f}s ({last}); log tail:\n{log}")

    # ------------------------------------------------------------------ users

    def write_kubeconfig(self, path: pathlib.Path, client: pki.KeyPair, user: str) -> pathlib.Path:
        assert self._serving_ca is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(kubeconfig(self.url, self._serving_ca.pair.cert_pem, client, user)))
        path.chmod(0o600)
        return path

    def mint_user(self, user: str, groups: list[str] | None = None) -> pathlib.Path:
        """A kubeconfig for a non-admin user (client cert signed by the client CA)."""
        assert self._client_ca is not None
        pair = self._client_ca.client(user, list(groups or []))
        return self.write_kubeconfig(self.workdir / f"kubeconfig-{user}", pair, user)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        for proc in reversed(self._procs):
            procs.stop_group(proc, grace=10)
        self._procs.clear()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def running(workdir: pathlib.Path | None = None) -> Iterator[ControlPlane]:
    """Start a control plane for the duration of a ``with`` block."""
    tmp = workdir or pathlib.Path(tempfile.mkdtemp(prefix="trading-cp-"))
    cp = ControlPlane(workdir=tmp)
    try:
        yield cp.start()
    finally:
        cp.stop()
