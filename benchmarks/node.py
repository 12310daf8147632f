"""Figures on the real node (issue 19): halt -> the executor pod refuses, and a session's start with real pods.

Both on the real single-node Kubernetes cluster ``make demo`` runs (``trading_dev.cluster.platform.
ClusterPlatform``: the node, the images, ``helm install`` of the chart into the restricted namespace
``trading``), each beside a baseline measured in the same run on the same node. It needs what ``make
cluster`` needs (root, the machine's one cluster lock); if the node cannot start, the run fails with the
reason and prints no figure.

1. **Session start.** t0 = just before the API create of a TradingSession (the python client; what
   ``kubectl apply`` sends, without kubectl's own start-up). The session is MarketOpen-ready at the first
   poll (every 0.25 s) of its status that shows all three of

   - ``status.phase == MarketOpen``,
   - the condition ``WorkersAvailable`` ``True`` (the operator counts every worker Deployment's ready
     replicas: every worker pod passed its readiness probe),
   - ``status.executor.tradingState == Active`` (the executor pod's own report: its order gate is open).

   The session's clock is simulated, speed 1, parked inside regular hours (``benchmarks.halt``'s
   ``MARKET_OPEN_AT``), so the phase goes to MarketOpen as soon as the pre-market checks pass. Five worker
   Deployments, four with a pod: inference is scaled to 0 (the momentum strategy needs no model), as in
   the demo. The same poll also records when every worker pod was Ready (``pods_s``): the operator's own
   share is the rest.

   Baseline: the operator is scaled to 0, and a plain client creates a session of the same spec (the
   workers read it), then the objects the operator would write for it, built with the operator's own
   builders (``build.rbac``, ``build.workers``: the ServiceAccount, Role, RoleBinding, ConfigMap and the
   five Deployments, same images, probes and resources, with the operator's settings read from its
   Deployment), and polls until every Deployment's pods are Ready. The rounds go operator, baseline,
   operator (``schedule``): half the operator's rounds on each side of the baseline's, so a drift of the
   machine's load falls on both; before the second half, a replica holds the operator's Lease again and
   ``OPERATOR_SETTLE_S`` pass.

   Each start also says where the CPU went from t0 to ready (``cpu_now``): the whole machine, the cluster's
   own processes, the operator's pods, the Redis and PostgreSQL pods and the session's worker pods.

2. **Halt.** On a MarketOpen session with every worker trading (strategy included), ``--halts`` times:
   t0 = wall clock, then the halt merge patch (python client, as ``benchmarks.halt``). Refusal = the
   executor pod's ``trading_executor_halted_changed_timestamp_seconds`` (wall clock, set right after the
   gate the submit path reads closed; the pod shares the machine's clock), read from its ``/metrics``
   through the API server's pod proxy after the fact (the read is not in the timed path). Baseline: a
   plain watch on the session (``benchmarks.halt.SessionWatch``), t0 to the MODIFIED event carrying
   ``spec.halted``: the same cluster's API server's floor. The time to ``status.phase == Halted`` is
   printed beside them too. Each halt is resumed (``spec.halted: false``) and the next waits for
   MarketOpen and the gate open again.

Run (as root; about 5 minutes warm, 2 of them the node and loading the 7 GB of images into it)::

    .venv/bin/python -m benchmarks node
    .venv/bin/python -m benchmarks.node --halts 20 --rounds 5 --keep --json /tmp/node.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import yaml
from kubernetes import client, config

from benchmarks.common import figure, pct, stop_on_sigterm
from benchmarks.halt import (
    MARKET_OPEN_AT,
    HaltSample,
    SessionWatch,
    gate_of,
    wait_until,
)
from trading_dev.platform import PlatformError
from trading_operator import names
from trading_operator.api.phases import Phase
from trading_operator.api.session import Role, TradingSession
from trading_operator.api.status import ConditionType
from trading_operator.build import rbac as build_rbac
from trading_operator.build import workers as build_workers
from trading_operator.settings import Settings

G, V, PLURAL = "trading.dev", "v1alpha1", "tradingsessions"
POLICY = "node-bench-limits"
COMMAND = ".venv/bin/python -m benchmarks node"
POLL_S = 0.25
OPERATOR_SETTLE_S = 5.0   # after a replica holds the Lease again: its watches start before the next session
ROLES = tuple(Role)
LIMITS = {"dailyLoss": {"enabled": True, "reducePct": 2, "haltPct": 3},
          "maxDrawdown": {"thresholdPct": 10, "action": "Halt"}}


def session_manifest(name: str, seed: int) -> dict[str, Any]:
    """A session on the simulated exchange, clock parked in regular hours, every worker but inference."""
    return {"apiVersion": f"{G}/{V}", "kind": "TradingSession", "metadata": {"name": name},
            "spec": {"broker": {"kind": "simulated", "simulated": {"seed": seed}},
                     "symbols": ["AAPL", "MSFT", "SPY"],
                     "strategy": {"name": "momentum", "params": {"lookback": 20, "threshold": 0.001, "orderQty": 5}},
                     "riskPolicyRef": {"name": POLICY},
                     "clock": {"mode": "simulated", "speed": 1, "start": MARKET_OPEN_AT},
                     "workers": {"inference": {"replicas": 0}}, "onHalt": "CancelOpenOrders"}}


# ------------------------------------------------------------------ what counts as ready (pure)

def market_open_ready(status: dict[str, Any] | None) -> bool:
    """MarketOpen-ready, from the session's status alone (the module docstring's definition)."""
    st = status or {}
    conditions = {c.get("type"): c for c in st.get("conditions") or []}
    return (st.get("phase") == Phase.MARKET_OPEN.value
            and (conditions.get(ConditionType.WORKERS_AVAILABLE.value) or {}).get("status") == "True"
            and (st.get("executor") or {}).get("tradingState") == "Active")


def deployments_ready(deployments: Sequence[dict[str, Any]], expected: int = len(ROLES)) -> bool:
    """All ``expected`` Deployments present, each rolled out with every desired pod Ready."""
    if len(deployments) != expected:
        return False
    for d in deployments:
        spec, st = d.get("spec") or {}, d.get("status") or {}
        want = spec.get("replicas", 1)
        if (st.get("observedGeneration") or 0) < (d.get("metadata") or {}).get("generation", 0):
            return False
        if (st.get("readyReplicas") or 0) != want or (st.get("updatedReplicas") or 0) != want:
            return False
    return True


def settings_from_env(env: Sequence[dict[str, Any]]) -> Settings:
    """The operator's Settings from its container's env (the plain values; fieldRefs are not settings)."""
    values = {e["name"].removeprefix("TRADING_").lower(): e["value"] for e in env
              if e.get("name", "").startswith("TRADING_") and "value" in e and e["value"] is not None}
    return Settings(**values)


def plain_objects(ts: TradingSession, settings: Settings) -> list[dict[str, Any]]:
    """What the operator writes for ``ts`` (its own builders), owned by the session: the baseline's writes."""
    owner = {"apiVersion": f"{G}/{V}", "kind": "TradingSession", "name": ts.metadata.name,
             "uid": ts.metadata.uid, "controller": True, "blockOwnerDeletion": False}
    digest = build_workers.config_hash(ts)
    objects = [*build_rbac.all_objects(ts), build_workers.config_map(ts),
               *(build_workers.deployment(ts, role, settings, config_digest=digest,
                                          secret_versions={} if settings.rotation_enabled else None)
                 for role in ROLES)]
    for obj in objects:
        obj["metadata"]["ownerReferences"] = [owner]
    return objects


# ------------------------------------------------------------------ where the CPU went during a start

def machine_busy_s(stat_text: str) -> float:
    """CPU seconds every core spent not idle, from the ``cpu`` line of ``/proc/stat`` (all but idle, iowait)."""
    fields = [int(x) for x in stat_text.splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _cgroup_cpu_s(uid: str) -> float:
    """CPU seconds of one pod, from its cgroup v1 ``cpuacct.usage`` (0 when the pod's cgroup is gone)."""
    from trading_dev.cluster import cleanup

    for hierarchy in ("cpuacct", "cpu,cpuacct"):
        base = cleanup.CGROUP_FS / hierarchy / cleanup.CGROUP_ROOT / "kubepods"
        for usage in base.rglob(f"pod{uid}/cpuacct.usage") if base.exists() else ():
            return int(usage.read_text()) / 1e9
    return 0.0


def cpu_now(operator_uids: Sequence[str], service_uids: Sequence[str] = (),
            worker_uids: Sequence[str] = ()) -> dict[str, float]:
    """Cumulative CPU seconds: the whole machine (every process, everyone's), the cluster's own processes
    (etcd, kube-apiserver, controllers, containerd, kubelet, kube-proxy), the operator's pods, the Redis and
    PostgreSQL pods and the session's worker pods."""
    from benchmarks.common import proc_cpu_seconds
    from trading_dev.cluster import cleanup

    cluster = 0.0
    for pid in cleanup.read_pids().values():
        try:
            cluster += proc_cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            continue
    return {"machine": machine_busy_s(pathlib.Path("/proc/stat").read_text()), "cluster": cluster,
            "operator": sum(_cgroup_cpu_s(uid) for uid in operator_uids),
            "services": sum(_cgroup_cpu_s(uid) for uid in service_uids),
            "workers": sum(_cgroup_cpu_s(uid) for uid in worker_uids)}


# ------------------------------------------------------------------ the report (pure)

@dataclass
class Start:
    side: str          # "operator" or "plain"
    ready_s: float     # t0 -> MarketOpen-ready (operator) / every pod Ready (plain)
    pods_s: float      # t0 -> every worker pod Ready
    created_s: float = 0.0   # t0 -> all five Deployments exist
    role_ready_s: dict[str, float] = field(default_factory=dict)  # t0 -> each Deployment's pods Ready
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds spent from t0 to ready: see cpu_now


@dataclass
class Report:
    halts: list[HaltSample] = field(default_factory=list)
    starts: list[Start] = field(default_factory=list)
    setup_s: float = 0.0
    load_average: list[float] = field(default_factory=list)   # 1/5/15 min, when the measurements started
    load_average_end: list[float] = field(default_factory=list)
    kubernetes: str = ""

    def side(self, name: str) -> list[Start]:
        return [s for s in self.starts if s.side == name]


def _median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no measurement: refusing to print a figure")
    return pct(values, 50)


def rows(report: Report, command: str = COMMAND) -> list[dict[str, Any]]:
    """The figures, each beside its same-run baseline (no numeric goal: the issue asks for them beside it)."""
    if not report.halts:
        raise ValueError("no halt measured: refusing to print a figure")
    n = len(report.halts)
    load = report.load_average
    refusal = [h.refusal_ms for h in report.halts]
    phase = [h.phase_ms for h in report.halts]
    floor = [h.watch_ms for h in report.halts]
    label = f"node: plain watch on the session, patch -> MODIFIED event ({n} halts)"
    out = []
    for q in (50, 99):
        out.append(figure(f"node: halt -> executor pod refuses, p{q} ({n} halts)", pct(refusal, q), "ms",
                          pct(floor, q), label, "", None, command, load_average=load))
    for q in (50, 99):
        out.append(figure(f"node: halt -> status.phase Halted, p{q} ({n} halts)", pct(phase, q), "ms",
                          pct(floor, q), label, "", None, command, load_average=load))
    op, plain = report.side("operator"), report.side("plain")
    base = _median([s.ready_s for s in plain])
    base_label = (f"node: plain client, the operator's five worker Deployments (its builders) -> every pod Ready "
                  f"(median of {len(plain)})")
    out.append(figure(f"node: session create -> MarketOpen-ready (median of {len(op)})",
                      _median([s.ready_s for s in op]), "s", base, base_label, "", None, command,
                      runs=[round(s.ready_s, 2) for s in op], baseline_runs=[round(s.ready_s, 2) for s in plain],
                      load_average=load))
    out.append(figure(f"node: session create -> its worker pods Ready (median of {len(op)})",
                      _median([s.pods_s for s in op]), "s", base, base_label, "", None, command,
                      runs=[round(s.pods_s, 2) for s in op], load_average=load))
    return out


def table(report: Report) -> str:
    def load(avg: Sequence[float]) -> str:
        return " ".join(f"{x:.2f}" for x in avg) or "-"

    lines = [f"real node (Kubernetes {report.kubernetes or '?'}): platform up in {report.setup_s:.0f}s; "
             f"load average {load(report.load_average)} at the start of the measurements, "
             f"{load(report.load_average_end)} at the end",
             f"halts ({len(report.halts)}), t0 = python-client merge patch sent"
             f"\n{'':<38}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
    for key, label in (("patch_ms", "patch request round trip"), ("watch_ms", "baseline: plain watch event"),
                       ("refusal_ms", "executor pod refuses new orders"), ("phase_ms", "status.phase == Halted")):
        values = [getattr(h, key) for h in report.halts]
        lines.append(f"{label:<38}{pct(values, 50):>9.1f}{pct(values, 99):>9.1f}{max(values):>9.1f}")
    lines.append("session start, t0 = API create of the session:")
    for s in report.starts:
        what = ("MarketOpen-ready" if s.side == "operator" else "every pod Ready (plain client, no operator)")
        cpu = ("; CPU s meanwhile: " + ", ".join(f"{k} {v:.1f}" for k, v in s.cpu_s.items()) if s.cpu_s else "")
        lines.append(f"  {s.side:<9} {what}: {s.ready_s:.1f} s (Deployments created at {s.created_s:.1f} s, "
                     f"worker pods Ready at {s.pods_s:.1f} s{cpu})")
    return "\n".join(lines)


# ------------------------------------------------------------------ the run

def _meta(obj: client.V1Pod | client.V1Deployment) -> client.V1ObjectMeta:
    """An object's metadata: the API server always sets it, the client's model has it optional."""
    if obj.metadata is None:
        raise PlatformError(f"a {type(obj).__name__} without metadata from the API server")
    return obj.metadata


def _name(obj: client.V1Pod | client.V1Deployment) -> str:
    name = _meta(obj).name
    if not name:
        raise PlatformError(f"a {type(obj).__name__} without a name from the API server")
    return name


def _uid(obj: client.V1Pod) -> str:
    uid = _meta(obj).uid
    if not uid:
        raise PlatformError(f"pod {_meta(obj).name} without a uid from the API server")
    return uid


def _running(pods: Sequence[client.V1Pod]) -> list[client.V1Pod]:
    """The pods in phase Running that are not being deleted."""
    return [p for p in pods
            if p.status is not None and p.status.phase == "Running" and _meta(p).deletion_timestamp is None]


class Node:
    """The API calls the benchmark makes on the cluster (python client, admin kubeconfig)."""

    def __init__(self, kubeconfig: pathlib.Path, namespace: str) -> None:
        self.api_client = config.new_client_from_config(str(kubeconfig))
        self.custom = client.CustomObjectsApi(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)
        self.ns = namespace

    # The client types a custom object's JSON as ``object``; it is a JSON object (a dict).
    def create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.create_namespaced_custom_object(G, V, self.ns, PLURAL, body))

    def session(self, name: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self.custom.get_namespaced_custom_object(G, V, self.ns, PLURAL, name))
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def deployments(self, session: str) -> list[dict[str, Any]]:
        listing = self.apps.list_namespaced_deployment(self.ns, label_selector=f"{names.LABEL_SESSION}={session}")
        return [self.api_client.sanitize_for_serialization(d) for d in listing.items]

    def pods(self, selector: str) -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(self.ns, label_selector=selector).items)

    def create(self, obj: dict[str, Any]) -> None:
        """Create one built object. The client's model is validated from the dict here, the same validation its
        methods apply to a dict body themselves (``validate_call``)."""
        kind = obj["kind"]
        if kind == "ServiceAccount":
            self.core.create_namespaced_service_account(self.ns, client.V1ServiceAccount.model_validate(obj))
        elif kind == "ConfigMap":
            self.core.create_namespaced_config_map(self.ns, client.V1ConfigMap.model_validate(obj))
        elif kind == "Role":
            self.rbac.create_namespaced_role(self.ns, client.V1Role.model_validate(obj))
        elif kind == "RoleBinding":
            self.rbac.create_namespaced_role_binding(self.ns, client.V1RoleBinding.model_validate(obj))
        elif kind == "Deployment":
            self.apps.create_namespaced_deployment(self.ns, client.V1Deployment.model_validate(obj))
        else:
            raise ValueError(f"the baseline does not create {kind}")

    def executor_gate(self, session: str) -> tuple[float, float]:
        """(halted 0/1, wall time of the last gate change) of the session's executor pod, via the pod proxy."""
        selector = ",".join(f"{k}={v}" for k, v in names.selector(session, Role.EXECUTOR).items())
        running = _running(self.pods(selector))
        if len(running) != 1:
            raise PlatformError(f"{session}: {len(running)} running executor pods")
        spec = running[0].spec
        if spec is None:
            raise PlatformError(f"{session}: the executor pod {_name(running[0])} has no spec")
        port = 8080
        for c in spec.containers:
            for p in c.ports or []:
                if p.name == "http":
                    port = p.container_port
        text = self.core.connect_get_namespaced_pod_proxy_with_path(
            f"{_name(running[0])}:{port}", self.ns, "metrics", _request_timeout=5)
        return gate_of(str(text))

    def operator_settings(self) -> tuple[Settings, client.V1Deployment]:
        found = self.apps.list_namespaced_deployment(self.ns, label_selector="app.kubernetes.io/component=operator")
        if len(found.items) != 1:
            raise PlatformError(f"expected one operator Deployment in {self.ns}, found {len(found.items)}")
        dep = found.items[0]
        pod = dep.spec.template.spec
        if pod is None or not pod.containers:
            raise PlatformError(f"the operator Deployment in {self.ns} has no pod template containers")
        env = self.api_client.sanitize_for_serialization(pod.containers[0].env or [])
        return settings_from_env(env), dep

    def scale_operator(self, deployment: str, replicas: int, timeout: float, lease: str = "") -> None:
        """Scale the operator; at 0 wait until its pods are gone, else until a running replica holds ``lease``."""
        self.apps.patch_namespaced_deployment_scale(deployment, self.ns, {"spec": {"replicas": replicas}})
        selector = "app.kubernetes.io/component=operator"
        if replicas == 0:
            wait_until("the operator's pods to be gone", lambda: not self.pods(selector), timeout=timeout, interval=0.5)
            return
        coordination = client.CoordinationV1Api(self.api_client)

        def leading() -> bool:
            running = {_name(p) for p in _running(self.pods(selector))}
            spec = coordination.read_namespaced_lease(lease, self.ns).spec
            return spec is not None and spec.holder_identity in running  # no spec: nobody holds it

        wait_until(f"a running operator replica to hold the Lease {lease}", leading, timeout=timeout, interval=0.5)

    def delete_session(self, name: str, timeout: float) -> None:
        """Delete the session, then wait until it and every pod of it are gone."""
        try:
            self.custom.delete_namespaced_custom_object(G, V, self.ns, PLURAL, name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        wait_until(f"session {name} and its pods to be gone",
                   lambda: self.session(name) is None and not self.pods(f"{names.LABEL_SESSION}={name}"),
                   timeout=timeout, interval=0.5)


def _time_start(node: Node, side: str, name: str,
                ready: Callable[[dict[str, Any] | None, list[dict[str, Any]]], bool],
                create: Callable[[], object], timeout: float) -> Start:
    """t0 -> ``ready`` and the steps on the way, polling the session and its Deployments."""
    operator_uids = [_uid(p) for p in node.pods("app.kubernetes.io/component=operator")]
    service_uids = [_uid(p) for p in node.pods("app.kubernetes.io/name in (trading-redis,trading-postgres)")]
    cpu0 = cpu_now(operator_uids, service_uids)  # the session's worker pods do not exist yet: 0
    t0 = time.monotonic()
    create()
    start = Start(side, 0.0, 0.0)
    deadline = t0 + timeout
    last: tuple[Any, ...] = ()
    while time.monotonic() < deadline:
        now = time.monotonic()
        session = node.session(name)
        deployments = node.deployments(name)
        if not start.created_s and len(deployments) == len(ROLES):
            start.created_s = now - t0
        for d in deployments:
            role = d["metadata"]["name"].removeprefix(f"{name}-")
            if role not in start.role_ready_s and deployments_ready([d], expected=1):
                start.role_ready_s[role] = round(now - t0, 2)
        if not start.pods_s and deployments_ready(deployments):
            start.pods_s = now - t0
        if start.pods_s and ready(session, deployments):
            start.ready_s = now - t0
            cpu1 = cpu_now(operator_uids, service_uids,
                           [_uid(p) for p in node.pods(f"{names.LABEL_SESSION}={name}")])
            start.cpu_s = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}
            return start
        st = (session or {}).get("status") or {}
        last = (st.get("phase"), [(c.get("type"), c.get("status"), c.get("reason")) for c in st.get("conditions") or []
                                  if c.get("type") in ("Ready", "WorkersAvailable")],
                (st.get("executor") or {}).get("tradingState"),
                [(d["metadata"]["name"], (d.get("status") or {}).get("readyReplicas")) for d in deployments])
        time.sleep(POLL_S)
    raise PlatformError(f"{name}: not ready within {timeout:.0f}s (last seen: {last})")


def schedule(rounds: int) -> list[tuple[str, int]]:
    """The order of the starts: operator, plain client, operator (half the operator's rounds each side of the
    baseline's, the first half one more), so a drift of the machine's load during the run falls on both."""
    first = (rounds + 1) // 2
    return [("operator", first), ("plain", rounds)] + ([("operator", rounds - first)] if rounds > first else [])


def _one_start(node: Node, side: str, name: str, seed: int, settings: Settings,
               left: Callable[[float], float]) -> Start:
    body = session_manifest(name, seed)
    if side == "operator":
        return _time_start(node, side, name, lambda session, _deps: market_open_ready((session or {}).get("status")),
                           lambda: node.create_session(body), left(420))

    def create() -> None:
        created = node.create_session(body)
        for obj in plain_objects(TradingSession.model_validate(created), settings):
            node.create(obj)

    return _time_start(node, side, name, lambda _session, deps: deployments_ready(deps), create, left(420))


def run(halts: int = 20, rounds: int = 5, timeout: float = 1200.0, keep: bool = False,
        log: Callable[[str], None] = print) -> Report:
    from trading_dev.cluster import node as cluster_node
    from trading_dev.cluster.platform import ClusterPlatform

    if halts < 1 or rounds < 1:
        raise ValueError("at least one halt and one round")
    report = Report()
    deadline = time.monotonic() + timeout
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="tp-bench-node-"))
    started = time.monotonic()

    def left(cap: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PlatformError(f"time budget of {timeout:.0f}s spent")
        return min(cap, remaining)

    watch: SessionWatch | None = None
    try:
        with ClusterPlatform(workdir, progress=True) as platform:  # PlatformError, saying why, if it cannot start
            report.setup_s = time.monotonic() - started
            report.kubernetes = platform.cluster.version
            ns = platform.namespace
            node = Node(platform.kubeconfig, ns)
            log(f"node: platform up in {report.setup_s:.0f}s (Kubernetes {report.kubernetes}); namespace {ns}")
            platform.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump(
                {"apiVersion": f"{G}/{V}", "kind": "RiskPolicy", "metadata": {"name": POLICY},
                 "spec": {"mode": "Active", "limits": LIMITS}}))
            report.load_average = [round(x, 2) for x in os.getloadavg()]

            settings, operator = node.operator_settings()
            operator_name = _name(operator)
            replicas = operator.spec.replicas or 1
            seeds = iter(range(300, 300 + 2 * rounds))
            for step, (side, count) in enumerate(schedule(rounds)):
                if side == "plain":
                    # the baseline: no operator; a plain client writes what the operator would, from its builders
                    log(f"node: baseline: scaling {operator_name} to 0 (the plain client writes the objects)")
                    node.scale_operator(operator_name, 0, left(120))
                else:
                    if step:
                        log(f"node: scaling {operator_name} back to {replicas}; waiting for its Lease")
                        node.scale_operator(operator_name, replicas, left(180), settings.lease_name)
                        time.sleep(OPERATOR_SETTLE_S)
                for _ in range(count):
                    seed = next(seeds)
                    name = f"node-{'op' if side == 'operator' else 'plain'}-{seed - 300}"
                    report.starts.append(_one_start(node, side, name, seed, settings, left))
                    last = report.starts[-1]
                    log(f"node: {name} {'MarketOpen-ready' if side == 'operator' else 'every pod Ready'} in "
                        f"{last.ready_s:.1f}s (Deployments created at {last.created_s:.1f}s, pods Ready at "
                        f"{last.role_ready_s}; CPU seconds meanwhile {last.cpu_s})")
                    if side == "operator" and not report.halts:  # the first session stays for the halts
                        watch = SessionWatch(platform.kubeconfig, name, namespace=ns)
                        watch.start()
                        _halts(node, watch, name, halts, report, left, log)
                        watch.stop()
                        watch = None
                    node.delete_session(name, left(240))
            report.load_average_end = [round(x, 2) for x in os.getloadavg()]
    except cluster_node.ClusterError as exc:
        raise PlatformError(f"the real node could not run: {exc}") from exc
    finally:
        if watch is not None:
            watch.stop()
        if keep:
            log(f"node: logs kept in {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return report


def _halts(node: Node, watch: SessionWatch, name: str, halts: int, report: Report,
           left: Callable[[float], float], log: Callable[[str], None]) -> None:
    def trading() -> bool:
        st = (node.session(name) or {}).get("status") or {}
        return st.get("phase") == Phase.MARKET_OPEN.value and node.executor_gate(name)[0] == 0.0

    def gate_closed(since: float) -> tuple[float, float] | Literal[False]:
        """The executor's gate, once closed by a change at or after ``since``."""
        gate = node.executor_gate(name)
        return gate if gate[0] == 1.0 and gate[1] >= since else False

    wait_until(f"{name}'s executor gate open", trading, timeout=left(60), interval=0.25)
    for i in range(halts):
        watch.trim()
        t0 = time.time()
        node.custom.patch_namespaced_custom_object(G, V, node.ns, PLURAL, name,
                                                   {"spec": {"halted": True, "haltReason": f"node benchmark {i}"}},
                                                   _content_type="application/merge-patch+json")
        t_patch = time.time()
        seen = watch.first(t0, lambda s: s.halted, timeout=left(30))
        phased = watch.first(t0, lambda s: s.phase == Phase.HALTED.value, timeout=left(30))
        gate = wait_until(f"{name}'s executor gate to close", functools.partial(gate_closed, t0),
                          timeout=left(30), interval=0.05)
        report.halts.append(HaltSample(name, (t_patch - t0) * 1e3, (seen.at - t0) * 1e3, (gate[1] - t0) * 1e3,
                                       (phased.at - t0) * 1e3))
        node.custom.patch_namespaced_custom_object(G, V, node.ns, PLURAL, name, {"spec": {"halted": False}},
                                                   _content_type="application/merge-patch+json")
        wait_until(f"{name} to resume", trading, timeout=left(60), interval=0.1)
        if (i + 1) % 5 == 0:
            recent = report.halts[-5:]
            log(f"node: {i + 1}/{halts} halts; last 5: refusal p50 {pct([s.refusal_ms for s in recent], 50):.1f} ms, "
                f"watch p50 {pct([s.watch_ms for s in recent], 50):.1f} ms")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--halts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="session starts per side (operator, plain client)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="overall time budget, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the pods' logs (printed path)")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    report = run(args.halts, args.rounds, args.timeout, args.keep)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"halts": [vars(h) for h in report.halts],
                                         "starts": [vars(s) for s in report.starts],
                                         "figures": rows(report)}, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
