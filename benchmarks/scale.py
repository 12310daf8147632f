"""Reconcile scale: how many sessions one operator runs, and what they cost it.

Issue 8, figure 2: create 1,000 TradingSessions -> time until all 5,000
worker Deployments exist and every session's status is written; the
operator's peak RSS; its CPU at rest with 1,000 sessions. Goals: <= 60 s,
<= 300 MB RSS.

Setup: the real local control plane (kube-apiserver + etcd), the CRDs, one
RiskPolicy, and the operator as it runs in production (``python -m
trading_operator`` as a subprocess, production settings: reconcile interval
2 s, lease election on). No local runtime: Deployments are objects only, as
on a cluster with no nodes. Sessions use a simulated clock parked on a
Saturday, so nothing transitions while the operator is measured at rest,
whatever day the benchmark runs; workers keep their default replicas.

Measured:

1. **real operator**: sessions created by 8 client threads; two watches in this
   process (TradingSessions, the operator's Deployments) timestamp the
   5,000th Deployment and the 1,000th first status write; the operator's RSS
   and CPU are sampled from ``/proc/<pid>`` every 0.5 s; peak RSS is VmHWM.
   At rest: CPU seconds (utime + stime) over ``--idle`` seconds, after a
   settle.
2. **baseline, same run, same objects**: the real operator is stopped and
   ``benchmarks.noop_operator`` (kopf with the same settings and watches,
   handlers that do nothing) is started on the 1,000 sessions and 5,000
   Deployments: time from its start until it has dispatched an event for
   every one of them, its peak RSS, its CPU over the same idle window.

Run::

    .venv/bin/python -m benchmarks scale                        # ~3 min
    .venv/bin/python -m benchmarks.scale --sessions 1000 --idle 30 --json benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config, watch

from benchmarks.common import (
    figure,
    proc_cpu_seconds,
    proc_rss_mb,
    profile_summary,
    start_profiler,
    stop_on_sigterm,
    stop_profiler,
)
from trading_dev.controlplane import server

ROOT = pathlib.Path(__file__).resolve().parents[1]
G, V, NS = "trading.dev", "v1alpha1", "default"
POLICY = "scale-limits"
MANAGED = "app.kubernetes.io/managed-by=trading-operator"
ROLES = 5
GOAL_SECONDS = 60.0
GOAL_RSS_MB = 300.0
COMMAND = ".venv/bin/python -m benchmarks scale"
SATURDAY = "2026-11-21T12:00:00Z"  # a Saturday: Initializing until Monday, on a speed-1 simulated clock


def session(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{G}/{V}", "kind": "TradingSession", "metadata": {"name": name},
            "spec": {"broker": {"kind": "simulated"}, "symbols": ["AAPL", "MSFT"],
                     "riskPolicyRef": {"name": POLICY},
                     "clock": {"mode": "simulated", "speed": 1, "start": SATURDAY}}}


class Tracker(threading.Thread):
    """Watches one collection from this process; remembers when each name first satisfied ``done``."""

    def __init__(self, api: client.CustomObjectsApi, group: str, version: str, plural: str,
                 done: Callable[[dict[str, Any]], bool], label_selector: str = "") -> None:
        super().__init__(name=f"track-{plural}", daemon=True)
        self.api, self.args, self.selector, self.done = api, (group, version, plural), label_selector, done
        self.first: dict[str, float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.api.list_cluster_custom_object(*self.args, label_selector=self.selector)
                for obj in listing.get("items") or []:
                    self._saw(obj)
                self._watch = watch.Watch()
                for event in self._watch.stream(self.api.list_cluster_custom_object, *self.args,
                                                label_selector=self.selector,
                                                resource_version=listing["metadata"]["resourceVersion"],
                                                timeout_seconds=300, _request_timeout=330):
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._saw(event["object"])
                    if self._stop.is_set():
                        break
            except Exception:
                self._stop.wait(0.5)

    def _saw(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if key not in self.first and self.done(obj):
            with self.lock:
                self.first.setdefault(key, time.time())

    def count(self) -> int:
        with self.lock:
            return len(self.first)

    def last(self) -> float:
        with self.lock:
            return max(self.first.values()) if self.first else 0.0

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()


def status_written(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("phase")) and status.get("observedGeneration") == obj["metadata"].get("generation")


class Sampler(threading.Thread):
    """RSS and CPU of one pid every ``interval`` seconds (for the peak and the busy-phase CPU)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(name=f"sample-{pid}", daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float, float]] = []  # (wall, rss MiB, cpu s)
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.time(), proc_rss_mb(self.pid)[0], proc_cpu_seconds(self.pid)))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Side:
    """One operator's figures (the real one or the no-op)."""

    name: str
    seconds: float = float("nan")          # to all objects handled
    complete: bool = False
    peak_rss_mb: float = float("nan")
    rest_rss_mb: float = float("nan")
    idle_cpu_s: float = float("nan")       # CPU seconds over the idle window
    busy_cpu_s: float = float("nan")       # CPU seconds until complete
    server_cpu_s: float = float("nan")     # kube-apiserver + etcd CPU seconds over the same span
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    sessions: int
    idle_s: float
    create_s: float = float("nan")
    real: Side = field(default_factory=lambda: Side("trading operator"))
    noop: Side = field(default_factory=lambda: Side("no-op kopf operator"))
    operator_metrics: dict[str, float] = field(default_factory=dict)


def _spawn(argv: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _scrape(port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
    return out


def _idle(pid: int, seconds: float) -> float:
    before = proc_cpu_seconds(pid)
    time.sleep(seconds)
    return proc_cpu_seconds(pid) - before


def run(sessions: int = 1000, idle: float = 30.0, timeout: float = 240.0, keep: bool = False,
        profile: pathlib.Path | None = None, log: Callable[[str], None] = print) -> Report:
    report = Report(sessions=sessions, idle_s=idle)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="tp-bench-scale-"))
    cp = server.ControlPlane(workdir=workdir / "cp", keep_workdir=keep)
    procs: list[subprocess.Popen[bytes]] = []
    trackers: list[Tracker] = []
    try:
        cp.start()
        kubectl = ["kubectl", f"--kubeconfig={cp.kubeconfig_path}"]
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")], check=True, capture_output=True)
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"],
                       check=True, capture_output=True)
        api_client = config.new_client_from_config(str(cp.kubeconfig_path))
        custom = client.CustomObjectsApi(api_client)
        custom.create_namespaced_custom_object(G, V, NS, "riskpolicies", {
            "apiVersion": f"{G}/{V}", "kind": "RiskPolicy", "metadata": {"name": POLICY}, "spec": {"mode": "Active"}})
        env = dict(os.environ, KUBECONFIG=str(cp.kubeconfig_path), TRADING_LEASE_NAMESPACE=NS,
                   TRADING_METRICS_PORT=str(server.free_port()), TRADING_LIVENESS_PORT=str(server.free_port()))
        env.pop("TRADING_RECONCILE_INTERVAL", None)  # production default

        # ---------------------------------------------------------------- the real operator
        op = _spawn([sys.executable, "-m", "trading_operator"], env, workdir / "operator.log")
        procs.append(op)
        coord = client.CoordinationV1Api(api_client)
        deadline = time.monotonic() + 60
        while True:
            if op.poll() is not None:
                raise RuntimeError(f"operator exited with {op.returncode}; see {workdir / 'operator.log'}")
            with contextlib.suppress(Exception):
                if coord.read_namespaced_lease("trading-operator", NS).spec.holder_identity:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("operator did not take its lease within 60 s")
            time.sleep(0.2)
        time.sleep(1.0)  # kopf's watches start right after leadership
        sampler = Sampler(op.pid)
        sampler.start()
        deps = Tracker(custom, "apps", "v1", "deployments", lambda _: True, MANAGED)
        sts = Tracker(custom, G, V, "tradingsessions", status_written)
        trackers += [deps, sts]
        for t in trackers:
            t.start()
        cpu0 = proc_cpu_seconds(op.pid)
        server_pids = [p.pid for p in cp._procs]  # etcd, kube-apiserver
        server0 = sum(proc_cpu_seconds(pid) for pid in server_pids)
        spy = start_profiler(op.pid, profile / "operator-ramp.txt") if profile else None
        log(f"scale: operator up (pid {op.pid}, RSS {proc_rss_mb(op.pid)[0]:.0f} MiB); creating {sessions} sessions")
        names = [f"s{i:04d}" for i in range(sessions)]
        t0 = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: custom.create_namespaced_custom_object(G, V, NS, "tradingsessions", session(n)),
                          names))
        report.create_s = time.time() - t0
        log(f"scale: {sessions} sessions created in {report.create_s:.1f}s; waiting for "
            f"{ROLES * sessions} Deployments and {sessions} statuses")
        end = time.monotonic() + timeout
        next_log = time.monotonic() + 10
        while time.monotonic() < end:
            if deps.count() >= ROLES * sessions and sts.count() >= sessions:
                report.real.complete = True
                break
            if op.poll() is not None:
                raise RuntimeError(f"operator exited with {op.returncode}; see {workdir / 'operator.log'}")
            if time.monotonic() >= next_log:
                next_log += 10
                log(f"scale: {time.time() - t0:.0f}s: {deps.count()} Deployments, {sts.count()} statuses, "
                    f"operator RSS {proc_rss_mb(op.pid)[0]:.0f} MiB")
            time.sleep(0.2)
        report.real.seconds = max(deps.last(), sts.last()) - t0 if report.real.complete else time.time() - t0
        report.real.busy_cpu_s = proc_cpu_seconds(op.pid) - cpu0
        report.real.server_cpu_s = sum(proc_cpu_seconds(pid) for pid in server_pids) - server0
        stop_profiler(spy)
        report.real.counts = {"deployments": deps.count(), "statuses": sts.count()}
        log(f"scale: {'done' if report.real.complete else 'NOT done'} in {report.real.seconds:.1f}s "
            f"({deps.count()} Deployments, {sts.count()} statuses); settling, then {idle:.0f}s at rest")
        time.sleep(min(10.0, idle / 3))
        spy = start_profiler(op.pid, profile / "operator-rest.txt") if profile else None
        report.real.idle_cpu_s = _idle(op.pid, idle)
        stop_profiler(spy)
        report.real.rest_rss_mb, report.real.peak_rss_mb = proc_rss_mb(op.pid)
        sampler.stop()
        with contextlib.suppress(Exception):
            report.operator_metrics = {k: v for k, v in _scrape(int(env["TRADING_METRICS_PORT"])).items()
                                       if k.startswith(("trading_operator_reconcile_total",
                                                        "trading_operator_reconcile_failures_total"))}
        for t in trackers:
            t.stop()
        _stop(op)

        # ---------------------------------------------------------------- the no-op baseline, same objects
        port = server.free_port()
        t1 = time.time()
        noop = _spawn([sys.executable, "-m", "benchmarks.noop_operator"], dict(env, NOOP_METRICS_PORT=str(port)),
                      workdir / "noop.log")
        procs.append(noop)
        want = {'noop_seen{kind="sessions"}': sessions, 'noop_seen{kind="deployments"}': report.real.counts[
            "deployments"]}
        end = time.monotonic() + timeout
        seen: dict[str, float] = {}
        while time.monotonic() < end:
            if noop.poll() is not None:
                raise RuntimeError(f"no-op operator exited with {noop.returncode}; see {workdir / 'noop.log'}")
            with contextlib.suppress(OSError):
                seen = _scrape(port)
                if all(seen.get(k, 0) >= v for k, v in want.items()):
                    report.noop.complete = True
                    break
            time.sleep(0.2)
        report.noop.seconds = (seen.get("noop_last_new_timestamp_seconds", time.time()) - t1)
        report.noop.busy_cpu_s = proc_cpu_seconds(noop.pid)
        report.noop.counts = {k.split('"')[1]: int(v) for k, v in seen.items() if k.startswith("noop_seen")}
        time.sleep(min(10.0, idle / 3))
        report.noop.idle_cpu_s = _idle(noop.pid, idle)
        report.noop.rest_rss_mb, report.noop.peak_rss_mb = proc_rss_mb(noop.pid)
        log(f"scale: no-op baseline saw {report.noop.counts} in {report.noop.seconds:.1f}s")
    finally:
        for t in trackers:
            t.stop()
        for proc in reversed(procs):
            _stop(proc)
        cp.stop()
        if keep:
            log(f"scale: logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def rows(report: Report, command: str = COMMAND) -> list[dict[str, Any]]:
    r, b, n = report.real, report.noop, report.sessions
    done = "" if r.complete else " (NOT complete: timed out)"
    return [
        figure(f"{n} sessions -> {ROLES * n} Deployments + {n} statuses{done}", r.seconds, "s", b.seconds,
               f"no-op kopf operator: start -> an event dispatched for each of the same {n} sessions and "
               f"{b.counts.get('deployments', 0)} Deployments", f"<= {GOAL_SECONDS:g} s",
               r.complete and r.seconds <= GOAL_SECONDS, command),
        figure(f"operator peak RSS, {n} sessions", r.peak_rss_mb, "MiB", b.peak_rss_mb,
               "no-op kopf operator, same objects", f"<= {GOAL_RSS_MB:g} MB", r.peak_rss_mb <= GOAL_RSS_MB, command),
        figure(f"operator CPU at rest, {n} sessions", r.idle_cpu_s / report.idle_s * 100, "% of a core",
               b.idle_cpu_s / report.idle_s * 100, f"no-op kopf operator, same objects, same {report.idle_s:g} s",
               "", None, command),
    ]


def table(report: Report) -> str:
    lines = [f"reconcile scale: {report.sessions} sessions created in {report.create_s:.1f}s (8 client threads)",
             f"{'':<22}{'to done s':>10}{'busy CPU s':>11}{'peak RSS':>10}{'rest RSS':>10}{'idle CPU %':>11}"]
    for side in (report.real, report.noop):
        lines.append(f"{side.name:<22}{side.seconds:>10.1f}{side.busy_cpu_s:>11.1f}{side.peak_rss_mb:>9.0f}M"
                     f"{side.rest_rss_mb:>9.0f}M{side.idle_cpu_s / report.idle_s * 100:>11.1f}  {side.counts}")
    lines.append(f"kube-apiserver + etcd CPU while the operator worked: {report.real.server_cpu_s:.1f} s "
                 f"(operator {report.real.busy_cpu_s:.1f} s, over {report.real.seconds:.0f} s on "
                 f"{len(os.sched_getaffinity(0))} CPUs)")
    if report.operator_metrics:
        lines.append("operator counters: " + ", ".join(f"{k.removeprefix('trading_operator_')} {v:g}"
                                                      for k, v in sorted(report.operator_metrics.items())))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of CPU-at-rest measurement")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for the operator to finish")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the control plane's directory")
    parser.add_argument("--profile", type=pathlib.Path,
                        help="directory for py-spy profiles of the operator (ramp and rest); needs py-spy")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    report = run(args.sessions, args.idle, args.timeout, args.keep, args.profile)
    print(table(report))
    for phase in ("ramp", "rest"):
        path = args.profile / f"operator-{phase}.txt" if args.profile else None
        if path is not None and path.exists():
            print(f"\noperator profile, {phase} (inclusive share of samples; {path}):\n{profile_summary(path)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"real": vars(report.real), "noop": vars(report.noop),
                                         "create_s": report.create_s, "figures": rows(report)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
