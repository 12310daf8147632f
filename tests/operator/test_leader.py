"""The leader stops acting before anyone may take its Lease, even when its link drops packets.

Issue 20, defect 3: the Lease calls had no request timeout, so a partition that black-holes
packets hung the renewal and disabled the "exit if I cannot renew" check; the old leader ran on
for 18-20 s after the other replica took the Lease. Here a real operator process talks to the real
API server through a proxy that starts dropping everything: it must exit within its renew deadline,
which is shorter than the lease, so it is gone before a standby could take over.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import time
import uuid

import pytest
from kubernetes import client, config

from tests.bind import listen_addresses
from tests.fixtures.faults import kubeconfig_via, to_api_server
from tests.fixtures.waiting import eventually_sync
from trading_dev import procs
from trading_dev.controlplane import server
from trading_operator import errors, kube, leader, metrics

pytestmark = pytest.mark.cluster

LEASE, DEADLINE, RETRY = 6, 4.0, 1.0


def test_a_partitioned_leader_exits_within_its_renew_deadline(control_plane: server.ControlPlane,
                                                              namespace: str, tmp_path: pathlib.Path) -> None:
    proxy = to_api_server(control_plane)
    kubeconfig = kubeconfig_via(control_plane, proxy.port, tmp_path / "kubeconfig-via-proxy")
    lease_name = f"leader-test-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), TRADING_LEASE_NAME=lease_name,
               TRADING_LEASE_NAMESPACE="default", TRADING_METRICS_PORT=str(server.free_port()),
               TRADING_LIVENESS_PORT=str(server.free_port()), TRADING_LEASE_SECONDS=str(LEASE),
               TRADING_LEASE_RENEW_DEADLINE=str(DEADLINE), TRADING_LEASE_RETRY_SECONDS=str(RETRY))
    log = tmp_path / "operator.log"
    with open(log, "wb") as fh:  # watches only an empty namespace: it must not act on other tests' sessions
        proc = subprocess.Popen([sys.executable, "-m", "trading_operator", "--log-format", "plain",
                                 "--namespace", namespace], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    leases = client.CoordinationV1Api(config.new_client_from_config(str(control_plane.kubeconfig_path)))
    try:
        eventually_sync(lambda: (leases.read_namespaced_lease(lease_name, "default").spec.holder_identity or "")
                        .endswith(f"-{proc.pid}"), timeout=45, what="the operator to take its lease")
        time.sleep(2 * RETRY)  # a few renewals through the proxy
        assert proc.poll() is None, log.read_text()[-3000:]
        # Off-cluster, its metrics and liveness endpoints listen on loopback only (issue 20, defect 7).
        for port in (env["TRADING_METRICS_PORT"], env["TRADING_LIVENESS_PORT"]):
            assert eventually_sync(lambda p=int(port): listen_addresses(p), what=f"a listener on {port}") == {"127.0.0.1"}

        proxy.blackhole()
        cut = time.monotonic()
        last_renew = leases.read_namespaced_lease(lease_name, "default").spec.renew_time
        eventually_sync(lambda: proc.poll() is not None, timeout=LEASE + 10, interval=0.05,
                        what="the partitioned leader to exit")
        stopped_after = time.monotonic() - cut
        assert proc.returncode == 1
        assert stopped_after <= DEADLINE + 1.0, f"ran {stopped_after:.1f}s into the partition"
        # It was gone before its Lease could expire for a standby (lease counted from its last renewal).
        lease = leases.read_namespaced_lease(lease_name, "default").spec
        assert lease.renew_time == last_renew and lease.holder_identity.endswith(f"-{proc.pid}")
        assert stopped_after < LEASE, "a standby could have taken over while the old leader ran"
        assert "could not renew the lease" in log.read_text()
    finally:
        procs.stop_group(proc, grace=5)
        proxy.stop()


async def test_a_write_past_the_renew_deadline_never_leaves_the_process(control_plane: server.ControlPlane,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A leader frozen past its deadline (SIGSTOP, a stalled VM) that wakes up must not write before its
    # watchdog ends it: every write checks the fence right before it is sent.
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    kube.api_client.cache_clear()
    lease = leader.Leader.__new__(leader.Leader)
    monkeypatch.setattr(kube, "WRITE_FENCE", lease.fence)
    try:
        lease.renewed_at = time.monotonic()  # renewed just now: the write goes out (and finds nothing)
        with pytest.raises(errors.NotFound):
            await kube.patch_status("tradingsessions", "default", "no-such-session", {"phase": "Halted"}, None)
        lease.renewed_at = time.monotonic() - leader.RENEW_DEADLINE - 0.1
        before = metrics.FENCED_WRITES._value.get()
        with pytest.raises(errors.ApiUnavailable, match="fenced"):
            await kube.patch_status("tradingsessions", "default", "no-such-session", {"phase": "Halted"}, None)
        assert metrics.FENCED_WRITES._value.get() == before + 1
        assert await kube.get("tradingsessions", "default", "no-such-session") is None  # reads are not fenced
    finally:
        monkeypatch.undo()
        kube.api_client.cache_clear()


def test_a_standby_answers_its_liveness_probe_then_takes_over(control_plane: server.ControlPlane, namespace: str,
                                                              tmp_path: pathlib.Path) -> None:
    # A standby blocks in the Lease loop before kopf (and its liveness endpoint) starts; without an
    # endpoint of its own the kubelet restarted it every minute (reported by tests/cluster_platform).
    import datetime as dt
    import urllib.request

    leases = client.CoordinationV1Api(config.new_client_from_config(str(control_plane.kubeconfig_path)))
    lease_name = f"standby-test-{uuid.uuid4().hex[:6]}"
    now = dt.datetime.now(dt.UTC)
    leases.create_namespaced_lease("default", client.V1Lease(
        metadata=client.V1ObjectMeta(name=lease_name),
        spec=client.V1LeaseSpec(holder_identity="another-replica", lease_duration_seconds=LEASE,
                                acquire_time=now, renew_time=now)))
    port = server.free_port()
    env = dict(os.environ, KUBECONFIG=str(control_plane.kubeconfig_path), TRADING_LEASE_NAME=lease_name,
               TRADING_LEASE_NAMESPACE="default", TRADING_METRICS_PORT=str(server.free_port()),
               TRADING_LIVENESS_PORT=str(port), TRADING_LEASE_SECONDS=str(LEASE),
               TRADING_LEASE_RENEW_DEADLINE=str(DEADLINE), TRADING_LEASE_RETRY_SECONDS=str(RETRY))
    log = tmp_path / "operator.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "trading_operator", "--log-format", "plain",
                                 "--namespace", namespace], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)

    def healthz() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    try:
        # The other replica keeps renewing: this process stays a standby, and its probe passes.
        until = time.monotonic() + 3 * RETRY + 2
        seen: list[tuple[int, str]] = []
        while time.monotonic() < until:
            lease = leases.read_namespaced_lease(lease_name, "default")
            lease.spec.renew_time = dt.datetime.now(dt.UTC)
            leases.replace_namespaced_lease(lease_name, "default", lease)
            with contextlib.suppress(OSError):
                seen.append(healthz())
            time.sleep(RETRY / 2)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert (200, '{"standby": true}') in seen, (seen, log.read_text()[-3000:])
        assert leases.read_namespaced_lease(lease_name, "default").spec.holder_identity == "another-replica"
        # The other replica stops renewing: this one takes the Lease, and kopf's endpoint takes the port.
        eventually_sync(lambda: (leases.read_namespaced_lease(lease_name, "default").spec.holder_identity or "")
                        .endswith(f"-{proc.pid}"), timeout=LEASE + 10, what="the standby to take over")
        eventually_sync(lambda: healthz()[0] == 200 and "standby" not in healthz()[1], timeout=20,
                        what="kopf's liveness endpoint")
        assert proc.poll() is None
    finally:
        procs.stop_group(proc, grace=5)
