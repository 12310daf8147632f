"""The fault drills of ``make chaos``: each drives one kind of fault into the running platform while
intents stream in, then prints and records its figures. Every figure that must be 0 is asserted.

Figures (``accounting.order_figures``): ``lost`` (an intent neither journaled nor refused),
``duplicated`` (a second placement or a repeated fill at the exchange, or more filled than ordered),
``unresolved`` (journaled but never confirmed or refused after the settle time),
``journal_vs_exchange_mismatches`` (a closed order whose journaled fills differ from the exchange's).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes import config as kconfig

from tests.chaos.accounting import IntentStream, assert_clean, order_figures
from tests.chaos.conftest import ChaosPlatform
from tests.drills.harness import Drill, wait_until
from trading_dev.platform import Supervised

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

KILLS = int(os.environ.get("TRADING_CHAOS_KILLS", "6"))


def _executor_pid(d: Drill) -> int | None:
    replicas = d.replicas("executor")
    return replicas[0].proc.pid if replicas and replicas[0].proc is not None and replicas[0].alive() else None


def _trading_again(d: Drill, resumed: list[str]) -> None:
    """Wait until the restarted executor trades; an 'executor lost' halt (its restart backoff outgrew the
    stale time, a correct halt) is resumed by id, as the runbook says, and counted."""
    def ready() -> bool:
        st = d.status()
        halt = st.get("halt")
        if halt and halt.get("id") not in resumed and "executor lost" in (halt.get("reason") or "") \
                and (st.get("executor") or {}).get("haltHandled") == halt.get("id"):
            resumed.append(halt["id"])
            d.patch_spec({"resumeHaltId": halt["id"]})
        return not halt and (st.get("executor") or {}).get("tradingState") == "Active" and \
            ((st.get("workers") or {}).get("executor") or {}).get("ready") == 1
    wait_until(ready, timeout=120, what="the executor trading again", interval=0.2)


def test_executor_sigkill_mid_flow(chaos: ChaosPlatform, make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    resumed: list[str] = []
    with IntentStream(d, interval=0.1) as stream:
        for _ in range(KILLS):
            time.sleep(chaos.rng.uniform(0.3, 2.0))
            pid = wait_until(lambda: _executor_pid(d), timeout=60, what="an executor process")
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda old=pid: (p := _executor_pid(d)) is not None and p != old, timeout=60,
                       what="the executor restarted")
            _trading_again(d, resumed)
        time.sleep(1.0)
    figures = order_figures(d, stream.coids)
    chaos.record("executor SIGKILL", {"kills": KILLS, "halts_for_an_executor_gone_longer_than_stale": len(resumed),
                                      **figures})
    assert_clean(figures)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_redis_crash_and_restart(chaos: ChaosPlatform, make_drill: Callable[..., Drill], how: str) -> None:
    d = make_drill()
    redis = chaos.platform.redis
    assert redis is not None and redis.proc is not None
    with IntentStream(d, interval=0.1) as stream:
        for _ in range(2):
            time.sleep(chaos.rng.uniform(0.5, 2.0))
            (redis.kill if how == "SIGKILL" else redis.stop)()
            time.sleep(chaos.rng.uniform(0.5, 3.0))
            redis.start()
        time.sleep(2.0)
    figures = order_figures(d, stream.coids)
    chaos.record(f"Redis {how} + restart", {"faults": 2, "publish_errors": stream.errors, **figures})
    assert_clean(figures)


def test_postgres_crash_and_restart(chaos: ChaosPlatform, make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    pg = chaos.platform.postgres
    assert pg is not None and pg.proc is not None
    with IntentStream(d, interval=0.1) as stream:
        for _ in range(2):
            time.sleep(chaos.rng.uniform(0.5, 2.0))
            os.kill(pg.proc.pid, signal.SIGQUIT)  # immediate shutdown: no checkpoint, recovery at the next start
            pg.proc.wait(timeout=30)
            time.sleep(chaos.rng.uniform(0.5, 3.0))
            pg.start()
        time.sleep(2.0)
    figures = order_figures(d, stream.coids)
    chaos.record("PostgreSQL crash + restart", {"faults": 2, **figures})
    assert_clean(figures)


# ------------------------------------------------------------------ operator and API server

class HaltTracker:
    """Polls the session: the halt intervals as status recorded them, to judge submits against."""

    def __init__(self, d: Drill) -> None:
        self.d = d
        self.halts: dict[str, tuple[float, float | None]] = {}
        self.executor_lost: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HaltTracker:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(Exception):
                self.poll()

    def poll(self) -> None:
        st = self.d.status()
        for latch in (st.get("halt"), st.get("lastHalt")):
            if not latch or not latch.get("since"):
                continue
            since = dt.datetime.fromisoformat(latch["since"].replace("Z", "+00:00")).timestamp()
            cleared = latch.get("clearedAt")
            until = dt.datetime.fromisoformat(cleared.replace("Z", "+00:00")).timestamp() if cleared else None
            self.halts[latch["id"]] = (since, until)
            if "executor lost" in (latch.get("reason") or ""):
                self.executor_lost.add(latch["id"])

    def violations(self, grace: float = 1.0) -> list[str]:
        """Submits placed at the exchange more than ``grace`` seconds into a halt (the halt path's own latency)."""
        record = self.d.exchange()
        bad = []
        for s in record.submits:
            if s.duplicate:
                continue
            for hid, (since, until) in self.halts.items():
                if since + grace < s.at and (until is None or s.at < until):
                    order = record.orders.get(s.client_order_id)
                    bad.append(f"{s.client_order_id} at {s.at:.3f} in halt {hid} "
                               f"({order.status.value if order else '?'})")
        return bad


def _leader(chaos: ChaosPlatform, timeout: float = 60.0) -> tuple[int, Supervised]:
    """The replica holding the lease (waits while a dead one's lease runs out)."""
    def find() -> tuple[int, Supervised] | None:
        holder = _holder(chaos)
        for i, replica in enumerate(chaos.platform.operators):
            if replica.pid is not None and replica.proc is not None and replica.proc.poll() is None \
                    and holder.endswith(f"-{replica.pid}"):
                return i, replica
        return None
    return wait_until(find, timeout=timeout, what="a running replica to hold the lease", interval=0.05)


def _holder(chaos: ChaosPlatform) -> str:
    coordination = client.CoordinationV1Api(kconfig.new_client_from_config(str(chaos.platform.kubeconfig)))
    return coordination.read_namespaced_lease("trading-operator", "default").spec.holder_identity or ""


def _converged(d: Drill, halted: bool, cpu: str) -> bool:
    body = d.get()
    st = body.get("status") or {}
    if st.get("observedGeneration") != body["metadata"]["generation"]:
        return False
    if bool(st.get("halt")) != halted:
        return False
    dep = d.apps.read_namespaced_deployment(f"{d.name}-executor", d.namespace)
    limits = (dep.spec.template.spec.containers[0].resources.limits or {})
    return bool(limits.get("cpu") == cpu)


def test_operator_sigkill_under_halts_resumes_and_edits(chaos: ChaosPlatform,
                                                         make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    state = {"halted": False, "cpu": "500m", "stop": False}

    def edits() -> None:
        n = 0
        while not state["stop"]:
            n += 1
            try:
                if n % 3 == 0:
                    state["cpu"] = f"{chaos.rng.randint(2, 9)}00m"
                    d.patch_spec({"workers": {"executor": {"resources": {"limits": {"cpu": state["cpu"]}}}}})
                else:
                    state["halted"] = not state["halted"]
                    d.patch_spec({"halted": state["halted"], "haltReason": f"chaos {n}"})
            except Exception:
                pass
            time.sleep(chaos.rng.uniform(0.5, 1.5))

    editor = threading.Thread(target=edits, daemon=True)
    kills: list[float] = []
    with HaltTracker(d) as tracker, IntentStream(d, interval=0.2) as stream:
        editor.start()
        for _ in range(KILLS):
            time.sleep(chaos.rng.uniform(1.0, 4.0))
            _, replica = _leader(chaos)
            os.kill(replica.pid or 0, signal.SIGKILL)
            kills.append(time.monotonic())
        time.sleep(2.0)
        state["stop"] = True
        editor.join(timeout=10)
        last = kills[-1]
        halted, cpu = bool(state["halted"]), str(state["cpu"])
        wait_until(lambda: _converged(d, halted, cpu), timeout=120, what="the session and its children to converge",
                   interval=0.2)
        convergence = time.monotonic() - last
        if halted:
            d.patch_spec({"halted": False})
            d.wait_status(lambda s: not s.get("halt"), "resumed", timeout=60)
    figures = order_figures(d, stream.coids)
    violations = tracker.violations()
    figures.update(kills=len(kills), halts=len(tracker.halts), fail_closed_violations=len(violations),
                   executor_lost_halts=len(tracker.executor_lost),
                   convergence_after_last_kill_s=round(convergence, 1),
                   operator_restarts=sum(r.restarts for r in chaos.platform.operators))
    figures["examples"]["violations"] = violations[:3]
    chaos.record("operator SIGKILL under halts, resumes and edits", figures)
    assert_clean(figures)


def _apiserver_pid(chaos: ChaosPlatform) -> int:
    cp = chaos.platform.cp
    assert cp is not None
    return next(p.pid for p in cp._procs if "kube-apiserver" in str(p.args[0]))


@pytest.mark.parametrize("seconds", [3, 25])
def test_api_server_outage(chaos: ChaosPlatform, make_drill: Callable[..., Drill], seconds: int) -> None:
    d = make_drill()
    pid = _apiserver_pid(chaos)
    restarts = sum(r.restarts for r in chaos.platform.operators)
    with HaltTracker(d) as tracker, IntentStream(d, interval=0.2) as stream:
        time.sleep(chaos.rng.uniform(0.5, 2.0))
        os.kill(pid, signal.SIGSTOP)  # every client hangs: an outage on every side
        time.sleep(seconds)
        os.kill(pid, signal.SIGCONT)
        back = time.monotonic()
        d.patch_spec({"workers": {"executor": {"resources": {"limits": {"cpu": "700m"}}}}})
        wait_until(lambda: _converged(d, False, "700m"), timeout=120, what="convergence after the outage",
                   interval=0.2)
        convergence = time.monotonic() - back
        time.sleep(12.0)  # longer than the stale time: a halt for a 'lost' executor would show by now
    figures = order_figures(d, stream.coids)
    figures.update(outage_s=seconds, executor_lost_halts=len(tracker.executor_lost),
                   halts=len(tracker.halts), convergence_after_outage_s=round(convergence, 1),
                   operator_restarts=sum(r.restarts for r in chaos.platform.operators) - restarts)
    chaos.record(f"API server outage {seconds}s", figures)
    assert not tracker.halts, tracker.halts
    assert_clean(figures)


# ------------------------------------------------------------------ leader election

def _takeover(chaos: ChaosPlatform, old: Supervised, since: float, timeout: float = 60.0) -> float:
    old_pid = old.pid

    def other_holds() -> bool:
        holder = _holder(chaos)
        return bool(holder) and not holder.endswith(f"-{old_pid}") and any(
            r.pid is not None and holder.endswith(f"-{r.pid}") for r in chaos.platform.operators)

    wait_until(other_holds, timeout=timeout, what="another replica to take the lease", interval=0.05)
    return time.monotonic() - since


def _cut_off_leader(chaos: ChaosPlatform, mode: str, results: dict[str, Any]) -> float:
    """Partition the leader from the API server; record its exit and the takeover; heal. Returns how long
    the cut-off leader outlived the takeover (negative: it was gone first)."""
    i, leader = _leader(chaos)
    exits = len(leader.exits)
    (chaos.proxies[i].blackhole if mode == "blackhole" else chaos.proxies[i].refuse)()
    start = time.monotonic()
    takeover = _takeover(chaos, leader, start)
    wait_until(lambda: len(leader.exits) > exits, timeout=30, what=f"the {mode} leader to exit")
    exited = leader.exits[-1][0] - start
    results[f"{'blackholed' if mode == 'blackhole' else mode}_leader_exit_s"] = round(exited, 1)
    results[f"takeover_after_{mode}_s"] = round(takeover, 1)
    chaos.proxies[i].heal()
    leader.wait_running(exits, timeout=60)
    return exited - takeover


def test_leader_sigkill_sigstop_and_partitions(chaos: ChaosPlatform, make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    results: dict[str, Any] = {}
    alive_after_takeover: list[float] = []
    with IntentStream(d, interval=0.3) as stream:
        # SIGKILL: the standby takes over once the lease expires.
        _, leader = _leader(chaos)
        exits = len(leader.exits)
        os.kill(leader.pid or 0, signal.SIGKILL)
        results["takeover_after_sigkill_s"] = round(_takeover(chaos, leader, time.monotonic()), 1)
        leader.wait_running(exits, timeout=30)

        # SIGSTOP: frozen past its lease; woken after the takeover, it must write nothing and exit.
        _, leader = _leader(chaos)
        exits, frozen = len(leader.exits), leader.pid or 0
        os.kill(frozen, signal.SIGSTOP)
        start = time.monotonic()
        results["takeover_after_sigstop_s"] = round(_takeover(chaos, leader, start), 1)
        fenced_before = (chaos.platform.logs / "operator.log").read_text(errors="replace").count("write fenced") + \
            (chaos.platform.logs / "operator-1.log").read_text(errors="replace").count("write fenced")
        woke = time.monotonic()
        os.kill(frozen, signal.SIGCONT)
        wait_until(lambda: len(leader.exits) > exits, timeout=30, what="the woken old leader to exit")
        results["woken_leader_exit_s"] = round(leader.exits[-1][0] - woke, 2)
        results["writes_fenced_after_wakeup"] = sum(
            (chaos.platform.logs / n).read_text(errors="replace").count("write fenced")
            for n in ("operator.log", "operator-1.log")) - fenced_before

        # Black hole (packets dropped) and refused (connections fail fast): the cut-off leader must exit
        # before the standby may take over; a black hole delivers what it held when it heals, late.
        leader.wait_running(exits, timeout=30)
        for mode in ("blackhole", "refused"):
            alive_after_takeover.append(_cut_off_leader(chaos, mode, results))
        # After all that, an edit converges under the new leader, and late writes were put back.
        healed = time.monotonic()
        d.patch_spec({"workers": {"executor": {"resources": {"limits": {"cpu": "400m"}}}}})
        wait_until(lambda: _converged(d, False, "400m"), timeout=120, what="convergence after the partitions",
                   interval=0.2)
        results["convergence_after_heal_s"] = round(time.monotonic() - healed, 1)
    figures = order_figures(d, stream.coids)
    # A write by a non-leader needs a deposed replica able to send after another took the lease: awake
    # and running (the black-holed and refused ones), or woken from SIGSTOP with its writes not fenced.
    # (The woken one's own writes are fenced and counted; kopf's own requests are not fenced: see
    # docs/reliability.md.)
    figures.update(results, non_leader_writes=sum(1 for a in alive_after_takeover if a > 0),
                   deposed_alive_after_takeover_s=[round(a, 2) for a in alive_after_takeover])
    chaos.record("leader SIGKILL, SIGSTOP, black hole, refused", figures)
    assert_clean(figures)
