"""Halt propagation: from a halt patch to executors refusing orders and to ``status.phase == Halted``.

The question a trading-ops engineer asks first: when I pull the switch, how
long until nothing more is sent? Issue 4 wants the time to the executor's
refusal, issue 3 the time to the phase the operator writes; issue 8 wants
both as p50/p99 over at least 50 halts with a goal of p99 <= 100 ms to
refusal.

Setup, all real and local (``trading_dev.platform.LocalPlatform``, the same
code as ``make demo``): kube-apiserver + etcd, Redis, PostgreSQL, the operator
as a subprocess, and the local process runtime running each session's
executor as a process. ``--sessions`` sessions (default 5) trade on the
simulated exchange with a simulated clock parked inside market hours, so they
sit in MarketOpen with the gate open. The executor, market data and risk run
(the pre-market checks need the risk worker's quote ages to open the market,
and the risk worker's reports are one of the three status writers whose
contention this measures); strategy and inference are scaled to 0, so no
orders flow. ``--all-workers`` runs the strategy too (orders flowing while
halting).

One halt, for session ``i % sessions``:

1. t0 = wall clock, then the halt is sent with the **python client**
   (``patch_namespaced_custom_object``, JSON merge patch, the body of the
   README's ``kubectl patch ... '{"spec":{"halted":true,...}}'``). The python
   client, not the kubectl binary, because t0 must be the moment the request
   leaves: a kubectl process spends ~100 ms starting and reading discovery
   before it sends anything, which is not the platform's latency (that
   overhead is reported separately, from the resumes).
2. refusal = the executor's ``trading_executor_halted_changed_timestamp_seconds``
   gauge (wall clock, set right after the gate the submit path reads closed),
   read from its ``/metrics``;
3. phase = arrival of the first watch event with ``status.phase == Halted``;
4. resume with the documented command, run as the real kubectl binary:
   ``kubectl patch tradingsession NAME --type=merge -p '{"spec":{"halted":false}}'``,
   then wait for MarketOpen and the executor's gate to open again.

Baseline, same run, same patches: a plain watch on each session (the
python client's watch, the same field-selected watch the executor runs) —
the time from t0 to the MODIFIED event that carries ``spec.halted: true``.
That is the floor: what the API server and a watch cost before any of our
code runs.

Run::

    .venv/bin/python -m benchmarks halt                 # ~2-3 min: 50 halts over 5 sessions
    .venv/bin/python -m benchmarks.halt --halts 100 --sessions 5 --json benchmarks/results/halt.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import yaml
from kubernetes import client, config, watch

from benchmarks.common import FigureExtra, figure, pct, stop_on_sigterm
from trading_dev import story
from trading_dev.controlplane.server import free_port
from trading_dev.platform import LocalPlatform, PlatformError

G, V, NS, PLURAL = "trading.dev", "v1alpha1", "default", "tradingsessions"
POLICY = "bench-limits"
GOAL_REFUSAL_P99_MS = 100.0
GOAL_PHASE_P99_RATIO = 2.0   # halt -> status.phase Halted, p99, at most this many times the watch floor's p99
COMMAND = ".venv/bin/python -m benchmarks halt"
# Monday 2026-11-23 10:00 New York: inside regular hours for six hours of a speed-1 simulated clock.
MARKET_OPEN_AT = "2026-11-23T15:00:00Z"


def manifests(sessions: Sequence[str], all_workers: bool) -> str:
    policy = {"apiVersion": f"{G}/{V}", "kind": "RiskPolicy", "metadata": {"name": POLICY},
              "spec": {"mode": "Active", "limits": story.RUNBOOK_LIMITS}}
    idle = {"replicas": 0}
    workers: dict[str, Any] = {"inference": idle}
    if not all_workers:
        workers.update(strategy=idle)
    docs = [policy]
    for i, name in enumerate(sessions):
        docs.append({"apiVersion": f"{G}/{V}", "kind": "TradingSession", "metadata": {"name": name},
                     "spec": {"broker": {"kind": "simulated", "simulated": {"seed": 100 + i}},
                              "symbols": ["AAPL", "MSFT", "SPY"],
                              "strategy": {"name": "momentum", "params": {"lookback": 20, "threshold": 0.001,
                                                                          "orderQty": 5}},
                              "riskPolicyRef": {"name": POLICY},
                              "clock": {"mode": "simulated", "speed": 1, "start": MARKET_OPEN_AT},
                              "workers": workers, "onHalt": "CancelOpenOrders"}})
    return yaml.safe_dump_all(docs, sort_keys=False)


# ------------------------------------------------------------------ observing

@dataclass
class Seen:
    at: float            # wall clock at arrival
    halted: bool         # spec.halted
    phase: str           # status.phase
    halt_active: bool    # status.halt.active


class SessionWatch(threading.Thread):
    """A plain watch on one session (field selector, like the executor's): the baseline, and the phase."""

    def __init__(self, kubeconfig: pathlib.Path, name: str, namespace: str = NS) -> None:
        super().__init__(name=f"bench-watch-{name}", daemon=True)
        self.api = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
        self.name = name
        self.namespace = namespace
        self.events: list[Seen] = []
        self.cond = threading.Condition()
        self._stopping = threading.Event()
        self._stream: watch.Watch | None = None
        self.error: str = ""

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                # the client types a custom object's JSON as ``object``; it is a JSON object (a dict)
                listing = cast(dict[str, Any], self.api.list_namespaced_custom_object(
                    G, V, self.namespace, PLURAL, field_selector=f"metadata.name={self.name}"))
                self._stream = watch.Watch()
                for event in self._stream.stream(self.api.list_namespaced_custom_object, G, V, self.namespace,
                                                 PLURAL,
                                                 field_selector=f"metadata.name={self.name}",
                                                 resource_version=listing["metadata"]["resourceVersion"],
                                                 timeout_seconds=600, _request_timeout=630):
                    at = time.time()
                    if event.get("type") not in ("ADDED", "MODIFIED"):
                        continue
                    obj = event["object"]
                    status = obj.get("status") or {}
                    seen = Seen(at, bool((obj.get("spec") or {}).get("halted")), str(status.get("phase") or ""),
                                bool((status.get("halt") or {}).get("active")))
                    with self.cond:
                        self.events.append(seen)
                        self.cond.notify_all()
                    if self._stopping.is_set():
                        break
            except Exception as exc:  # a dropped watch: re-list (events in between are only late, not lost)
                self.error = f"{type(exc).__name__}: {exc}"
                self._stopping.wait(0.2)

    def stop(self) -> None:
        self._stopping.set()
        if self._stream is not None:
            self._stream.stop()

    def first(self, since: float, predicate: Callable[[Seen], bool], timeout: float) -> Seen:
        """The first event that arrived after ``since`` and satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for seen in self.events:
                    if seen.at >= since and predicate(seen):
                        return seen
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PlatformError(f"session {self.name}: no matching watch event within {timeout:.0f}s "
                                        f"(last: {self.events[-1:]}, watch error: {self.error or 'none'})")
                self.cond.wait(left)

    def trim(self) -> None:
        with self.cond:
            self.events = self.events[-5:]


def gate_of(metrics_text: str) -> tuple[float, float]:
    """(halted 0/1, wall time of the last gate change) from the text of an executor's /metrics (-1: absent)."""
    halted = changed = -1.0
    for line in metrics_text.splitlines():
        if line.startswith("trading_executor_halted "):
            halted = float(line.split()[1])
        elif line.startswith("trading_executor_halted_changed_timestamp_seconds "):
            changed = float(line.split()[1])
    return halted, changed


def executor_gate(port: int) -> tuple[float, float]:
    """(halted 0/1, wall time of the last gate change) from the executor's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        return gate_of(resp.read().decode())


def scrape(port: int, prefixes: Sequence[str]) -> dict[str, float]:
    """Samples whose name starts with one of ``prefixes`` from a /metrics endpoint."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(tuple(prefixes)):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
    return out


OPERATOR_SERIES = ("trading_operator_reconcile_total", "trading_operator_reconcile_failures_total")
# Each worker's own count of status writes that lost a race (a guarded transact re-run) and of failed status
# writes (a 409 on a plain merge would show here).
WORKER_SERIES = ("trading_worker_status_conflicts_total", 'trading_apiserver_errors_total{op="patch_status"}')
OPERATOR_CONFLICTS = 'trading_operator_reconcile_failures_total{kind="TradingSession",reason="Conflict"}'


T = TypeVar("T")


def wait_until(what: str, predicate: Callable[[], T | Literal[False] | None], timeout: float,
               interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something true (not an exception); return that."""
    deadline = time.monotonic() + timeout
    last: T | Literal[False] | Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # a process still starting: keep polling until the deadline
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise PlatformError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# ------------------------------------------------------------------ the run

@dataclass
class HaltSample:
    session: str
    patch_ms: float      # t0 -> patch response
    watch_ms: float      # t0 -> MODIFIED event with spec.halted (baseline)
    refusal_ms: float    # t0 -> executor gate closed
    phase_ms: float      # t0 -> event with status.phase == Halted
    resume_s: float = 0.0        # kubectl resume command start -> MarketOpen and gate open again
    kubectl_s: float = 0.0       # wall time of the kubectl patch process itself


@dataclass
class Report:
    sessions: int
    halts: int
    all_workers: bool
    samples: list[HaltSample] = field(default_factory=list)
    setup_s: float = 0.0
    ready_s: float = 0.0
    operator_during_halts: dict[str, float] = field(default_factory=dict)  # counter deltas over the halts
    workers_during_halts: dict[str, float] = field(default_factory=dict)   # summed over every worker process
    # Status-write conflicts (the operator's reason=Conflict plus every worker's own counter), counted from
    # before each halt patch to the phase Halted and the gate closed (the halt path), and from there to
    # MarketOpen again (the resume, whose write is guarded by the whole resourceVersion: decision 0015).
    halt_conflicts: float = 0.0
    resume_conflicts: float = 0.0


def run(sessions: int = 5, halts: int = 50, all_workers: bool = False, timeout: float = 420.0,
        keep: bool = False, operator_path: pathlib.Path | None = None, log: Callable[[str], None] = print) -> Report:
    names = [f"halt-{i}" for i in range(sessions)]
    report = Report(sessions=sessions, halts=halts, all_workers=all_workers)
    deadline = time.monotonic() + timeout
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="tp-bench-halt-"))
    started = time.monotonic()
    watches: list[SessionWatch] = []
    try:
        metrics_port = free_port()
        operator_env = {"TRADING_METRICS_PORT": str(metrics_port)}
        if operator_path is not None:  # another version of the operator (workers stay this checkout's)
            operator_env["PYTHONPATH"] = os.pathsep.join([str(operator_path), os.environ.get("PYTHONPATH", "")])
        with LocalPlatform(workdir, operator_env=operator_env) as platform:
            report.setup_s = time.monotonic() - started
            log(f"halt: platform up in {report.setup_s:.1f}s; creating {sessions} sessions")
            api = client.CustomObjectsApi(config.new_client_from_config(str(platform.kubeconfig)))
            platform.kubectl("apply", "-n", NS, "-f", "-", input=manifests(names, all_workers))
            watches = [SessionWatch(platform.kubeconfig, n) for n in names]
            for w in watches:
                w.start()
            runtime = platform.runtime
            assert runtime is not None

            def port(name: str) -> int:
                return runtime.pods[(NS, f"{name}-executor")].replicas[0].port

            def trading(name: str) -> bool:
                body = cast(dict[str, Any], api.get_namespaced_custom_object(G, V, NS, PLURAL, name))
                st = body.get("status") or {}
                return st.get("phase") == "MarketOpen" and executor_gate(port(name))[0] == 0.0

            def gate_closed(name: str, since: float) -> tuple[float, float] | Literal[False]:
                """The executor's gate, once closed by a change at or after ``since``."""
                gate = executor_gate(port(name))
                return gate if gate[0] == 1.0 and gate[1] >= since else False

            t_ready = time.monotonic()
            for name in names:
                wait_until(f"{name} MarketOpen with its executor's gate open", functools.partial(trading, name),
                           timeout=max(5.0, min(180.0, deadline - time.monotonic())), interval=0.25)
            report.ready_s = time.monotonic() - t_ready
            log(f"halt: {sessions} sessions in MarketOpen, executors trading ({report.ready_s:.1f}s); "
                f"{halts} halts")
            worker_ports = [r.port for pod in runtime.pods.values() for r in pod.replicas]

            def workers_now() -> dict[str, float]:
                total: dict[str, float] = {}
                for p in worker_ports:
                    for k, v in scrape(p, WORKER_SERIES).items():
                        total[k] = total.get(k, 0.0) + v
                return total

            def conflicts_now() -> float:
                operator = scrape(metrics_port, OPERATOR_SERIES).get(OPERATOR_CONFLICTS, 0.0)
                return operator + sum(v for k, v in workers_now().items() if k.startswith(WORKER_SERIES[0]))

            before = scrape(metrics_port, OPERATOR_SERIES)
            workers_before = workers_now()
            for i in range(halts):
                if time.monotonic() > deadline:
                    raise PlatformError(f"time budget spent after {i} halts")
                name = names[i % sessions]
                w = watches[i % sessions]
                w.trim()
                c0 = conflicts_now()  # scraped before t0: not in the timed path
                t0 = time.time()
                api.patch_namespaced_custom_object(G, V, NS, PLURAL, name,
                                                   {"spec": {"halted": True, "haltReason": f"benchmark halt {i}"}},
                                                   _content_type="application/merge-patch+json")
                t_patch = time.time()
                seen = w.first(t0, lambda s: s.halted, timeout=30)
                phased = w.first(t0, lambda s: s.phase == "Halted", timeout=30)
                gate = wait_until(f"{name}'s executor gate to close", functools.partial(gate_closed, name, t0),
                                  timeout=30)
                sample = HaltSample(name, (t_patch - t0) * 1e3, (seen.at - t0) * 1e3, (gate[1] - t0) * 1e3,
                                    (phased.at - t0) * 1e3)
                c1 = conflicts_now()
                report.halt_conflicts += c1 - c0
                # Resume with the documented command (halt source User: spec.halted false clears it).
                t1 = time.monotonic()
                platform.kubectl("patch", "tradingsession", name, "-n", NS, "--type=merge",
                                 "-p", '{"spec":{"halted":false}}')
                sample.kubectl_s = time.monotonic() - t1
                wait_until(f"{name} to resume", functools.partial(trading, name), timeout=60, interval=0.05)
                sample.resume_s = time.monotonic() - t1
                report.resume_conflicts += conflicts_now() - c1
                report.samples.append(sample)
                if (i + 1) % 10 == 0:
                    recent = report.samples[-10:]
                    log(f"halt: {i + 1}/{halts} halts; last 10: refusal p50 "
                        f"{pct([s.refusal_ms for s in recent], 50):.1f} ms, phase p50 "
                        f"{pct([s.phase_ms for s in recent], 50):.1f} ms, watch p50 "
                        f"{pct([s.watch_ms for s in recent], 50):.1f} ms")
            after = scrape(metrics_port, OPERATOR_SERIES)
            report.operator_during_halts = {k: v - before.get(k, 0.0) for k, v in after.items()
                                            if v - before.get(k, 0.0)}
            workers_after = workers_now()
            report.workers_during_halts = {k: v - workers_before.get(k, 0.0) for k, v in workers_after.items()
                                           if v - workers_before.get(k, 0.0)}
            for w in watches:
                w.stop()
    finally:
        for w in watches:
            w.stop()
        if keep:
            log(f"halt: logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def summary(report: Report) -> dict[str, Any]:
    s = report.samples
    if not s:
        raise RuntimeError(f"no halt was measured ({report.sessions} sessions): nothing to summarise")

    def stats(values: list[float]) -> dict[str, float]:
        return {"p50": pct(values, 50), "p99": pct(values, 99), "max": max(values), "min": min(values)}

    return {"sessions": report.sessions, "halts": len(s), "all_workers": report.all_workers,
            "setup_s": report.setup_s, "ready_s": report.ready_s,
            "patch_ms": stats([x.patch_ms for x in s]), "watch_ms": stats([x.watch_ms for x in s]),
            "refusal_ms": stats([x.refusal_ms for x in s]), "phase_ms": stats([x.phase_ms for x in s]),
            "resume_s": stats([x.resume_s for x in s]), "kubectl_s": stats([x.kubectl_s for x in s]),
            "halt_conflicts": report.halt_conflicts, "resume_conflicts": report.resume_conflicts,
            "operator_counters": report.operator_during_halts, "worker_counters": report.workers_during_halts}


def rows(report: Report, command: str = COMMAND) -> list[dict[str, Any]]:
    sm = summary(report)
    n, k = sm["halts"], report.sessions
    label = f"plain watch on the session, patch -> MODIFIED event ({n} halts)"
    refusal, phase, watch_ = sm["refusal_ms"], sm["phase_ms"], sm["watch_ms"]
    out = []
    refusal_miss: FigureExtra = {} if refusal["p99"] <= GOAL_REFUSAL_P99_MS else {
        "by": f"{refusal['p99'] - GOAL_REFUSAL_P99_MS:.0f} ms over",
        "why": f"an absolute goal: the watch floor alone was {watch_['p99']:.0f} ms p99 in the same run "
               f"(refusal {refusal['p99'] / watch_['p99']:.2f}x it), i.e. the machine's load, not the executor"}
    for q in ("p50", "p99"):
        out.append(figure(f"halt -> executor refuses, {q} ({n} halts, {k} sessions)", refusal[q], "ms",
                          watch_[q], label, f"p99 <= {GOAL_REFUSAL_P99_MS:g} ms" if q == "p99" else "",
                          refusal[q] <= GOAL_REFUSAL_P99_MS if q == "p99" else None, command,
                          **(refusal_miss if q == "p99" else {})))
    ratio = phase["p99"] / watch_["p99"] if watch_["p99"] else float("inf")
    miss: FigureExtra = {} if ratio <= GOAL_PHASE_P99_RATIO else {
        "by": f"{ratio / GOAL_PHASE_P99_RATIO - 1:.0%} over ({phase['p99'] - GOAL_PHASE_P99_RATIO * watch_['p99']:.0f} ms)",
        "why": "the operator's watch -> wake -> reconcile -> status write comes after the watch floor; "
               "on two shared cores its tail is the operator waiting for CPU"}
    for q in ("p50", "p99"):
        out.append(figure(f"halt -> status.phase Halted, {q} ({n} halts, {k} sessions)", phase[q], "ms",
                          watch_[q], label, f"p99 <= {GOAL_PHASE_P99_RATIO:g}x the watch floor" if q == "p99" else "",
                          ratio <= GOAL_PHASE_P99_RATIO if q == "p99" else None, command, **(miss if q == "p99" else {})))
    conflicts = report.halt_conflicts
    conflicts_miss: FigureExtra = {} if conflicts == 0 else {
        "by": f"{conflicts:g}", "why": "see the counters printed with the halt table"}
    out.append(figure(f"status-write conflicts on the halt path ({n} halts)", conflicts, "conflicts", None,
                      "", "0 (operator reason=Conflict + workers' own counters)", conflicts == 0, command,
                      **conflicts_miss))
    out.append(figure(f"status-write conflicts on the resume path ({n} resumes)", report.resume_conflicts,
                      "conflicts", None, "", "", None, command))
    return out


def table(report: Report) -> str:
    sm = summary(report)
    lines = [f"halt propagation: {sm['halts']} halts over {sm['sessions']} sessions "
             f"({'all workers' if sm['all_workers'] else 'executor, market data and risk; no strategy'}); "
             "t0 = python-client merge patch sent",
             f"{'':<34}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
    for key, label in (("patch_ms", "patch request round trip"), ("watch_ms", "baseline: plain watch event"),
                       ("refusal_ms", "executor refuses new orders"), ("phase_ms", "status.phase == Halted")):
        st = sm[key]
        lines.append(f"{label:<34}{st['p50']:>9.1f}{st['p99']:>9.1f}{st['max']:>9.1f}")
    lines.append(f"resume (documented kubectl command -> MarketOpen, gate open): p50 {sm['resume_s']['p50']:.2f} s, "
                 f"p99 {sm['resume_s']['p99']:.2f} s; the kubectl process alone: p50 {sm['kubectl_s']['p50']:.2f} s")
    if report.operator_during_halts:
        lines.append("operator counters over the halts: " + ", ".join(
            f"{k.removeprefix('trading_operator_')} +{v:g}" for k, v in sorted(report.operator_during_halts.items())))
    lines.append("worker counters over the halts (every worker process): " + (", ".join(
        f"{k} +{v:g}" for k, v in sorted(report.workers_during_halts.items())) or "none moved"))
    lines.append(f"status-write conflicts: {report.halt_conflicts:g} on the halt path (patch -> Halted, gate "
                 f"closed), {report.resume_conflicts:g} on the resume path (-> MarketOpen, gate open)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.halt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--halts", type=int, default=50)
    parser.add_argument("--all-workers", action="store_true", help="also run market data, strategy and risk")
    parser.add_argument("--timeout", type=float, default=420.0, help="overall time budget, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the platform's logs")
    parser.add_argument("--operator-path", type=pathlib.Path,
                        help="run the operator from this directory (the 'operator' folder of another checkout)")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    report = run(args.sessions, args.halts, args.all_workers, args.timeout, args.keep, args.operator_path)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary(report), "samples": [vars(s) for s in report.samples],
                                         "figures": rows(report)}, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

