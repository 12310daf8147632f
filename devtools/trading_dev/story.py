"""The demo's story, as code the demo and the end-to-end test both run.

``run_story`` drives a running platform (a ``Platform``: the process runtime or the real node)
through one trading day
(policy, session, backup; phases; orders; a risk halt; the risk owner's
fix and the resume by halt id; the verified backup; the close) and
returns what happened, read back from the API and the journal, so the
test asserts on the same record the demo prints.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
import yaml

from trading_dev.platform import Platform, PlatformError

if TYPE_CHECKING:
    from trading_dev.monitoring import Monitoring

NS = "default"
SESSION = "demo"
POLICY = "demo-limits"
BACKUP = "demo-backup"

# The demo's breach is a drawdown halt; the daily-loss rule is off so its Reduce step (which latches
# until a human clears it) does not stop the story before any position is built.
DRILL_LIMITS = {"dailyLoss": {"enabled": False},
                "maxDrawdown": {"thresholdPct": 0.01, "action": "Halt"}}
RUNBOOK_LIMITS = {"dailyLoss": {"enabled": True, "reducePct": 2, "haltPct": 3},
                  "maxDrawdown": {"thresholdPct": 10, "action": "Halt"}}


def manifests(speed: float) -> str:
    policy = {"apiVersion": "trading.dev/v1alpha1", "kind": "RiskPolicy", "metadata": {"name": POLICY},
              "spec": {"mode": "Active", "limits": DRILL_LIMITS}}
    session = {"apiVersion": "trading.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": SESSION},
               "spec": {"broker": {"kind": "simulated", "simulated": {"seed": 7}},
                        "symbols": ["AAPL", "MSFT", "NVDA", "AMZN", "SPY"],
                        "strategy": {"name": "momentum", "params": {"lookback": 20, "threshold": 0.001, "orderQty": 20}},
                        "riskPolicyRef": {"name": POLICY},
                        "clock": {"mode": "simulated", "speed": speed, "start": "2026-11-23T08:59:00Z"},
                        "workers": {"inference": {"replicas": 0}},
                        "onHalt": "CancelOpenOrders"}}
    backup = {"apiVersion": "trading.dev/v1alpha1", "kind": "Backup", "metadata": {"name": BACKUP},
              "spec": {"sessionRef": {"name": SESSION}, "targets": ["journal", "redis", "models", "resources"],
                       "destination": {"pvc": {"claimName": "demo-backups", "path": "/demo"}},
                       "retention": {"keepLast": 3}, "verify": True}}
    return yaml.safe_dump_all([policy, session, backup], sort_keys=False)


def session_clock(st: dict[str, Any]) -> str:
    """The session's own clock (simulated in the demo) as of the operator's last reconcile: 'MM-DD HH:MM UTC'."""
    clock = str(st.get("clock") or "")
    return clock[5:16].replace("T", " ") + " UTC" if len(clock) >= 16 else "--"


class Story:
    def __init__(self, platform: Platform, timeout: float) -> None:
        self.p = platform
        self.ns = platform.namespace
        self.deadline = time.monotonic() + timeout
        self.last_line = 0.0
        self.backup: dict[str, Any] | None = None  # the Backup's final status, once narrated
        self.backup_checked = 0.0
        self.backup_clock = ""

    def say(self, text: str) -> None:
        print(f"\n==> {text}", flush=True)

    def note(self, text: str) -> None:
        print(f"    {text}", flush=True)

    def watch_backup(self, st: dict[str, Any]) -> None:
        """Narrate the Backup when it finishes, whatever the story is waiting for then (it runs from the start)."""
        if self.backup is not None or time.monotonic() - self.backup_checked < 2:
            return
        self.backup_checked = time.monotonic()
        status = self.get("backup", BACKUP).get("status") or {}
        if status.get("phase") not in ("Completed", "Failed"):
            return
        self.backup = dict(status)
        self.backup_clock = session_clock(st)
        self.say(f"[{session_clock(st)} session time] the one-shot backup ran: journal, Redis, models and "
                 "resources, verified by a scratch restore")
        self.note(f"backup {status.get('phase')}: verified={status.get('verified')} "
                  f"size={status.get('sizeBytes')} bytes at {status.get('location')}")

    def wait_backup(self, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while self.backup is None and time.monotonic() < end:
            st = self.session()
            self.progress(st)
            self.watch_backup(st)
            time.sleep(1)
        if self.backup is None:
            self.note("backup did not finish in time")
            return {"phase": "Timeout"}
        return self.backup

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.p.kubectl("get", kind, name, "-n", self.ns, "-o", "json").stdout
        return json.loads(out) if out.strip() else {}

    def session(self) -> dict[str, Any]:
        return self.get("tradingsession", SESSION).get("status") or {}

    def progress(self, st: dict[str, Any]) -> None:
        if time.monotonic() - self.last_line < 3:
            return
        self.last_line = time.monotonic()
        summary = st.get("summary") or {}
        halt = st.get("halt") or {}
        print(f"    [{session_clock(st)}] phase {st.get('phase', '-'):<12} state {st.get('tradingState', '-'):<8} "
              f"orders {summary.get('orders', 0):>4}  fills {summary.get('fills', 0):>4}  "
              f"rejected {summary.get('rejected', 0):>3}  P&L {summary.get('dailyPnlPct', 0.0):+.4f}%"
              + (f"  HALTED ({halt.get('source')}: {halt.get('reason')})" if halt.get("active") else ""), flush=True)

    def wait(self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 300) -> dict[str, Any]:
        end = min(self.deadline, time.monotonic() + timeout)
        while time.monotonic() < end:
            st = self.session()
            self.progress(st)
            self.watch_backup(st)
            if predicate(st):
                return st
            time.sleep(0.5)
        raise PlatformError(f"timed out waiting for {what}; {self.p.logs_hint}")


async def journal_counts(dsn: str, ns: str = NS) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for table in ("orders", "fills", "rejections", "risk_events"):
            out[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE session = $1",
                                                 f"{ns}/{SESSION}"))
        return out
    finally:
        await conn.close()


async def rejection_reasons(dsn: str, ns: str = NS) -> dict[str, int]:
    """The journal's pre-trade rejections of the demo session, counted by reason (most frequent first)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT reason, count(*) AS n FROM rejections WHERE session = $1 "
                                "GROUP BY reason ORDER BY n DESC, reason", f"{ns}/{SESSION}")
        return {str(r["reason"]): int(r["n"]) for r in rows}
    finally:
        await conn.close()


async def journal_totals(dsn: str, ns: str = NS) -> tuple[dict[str, int], dict[str, int]]:
    """``journal_counts`` and ``rejection_reasons`` from one snapshot of the journal: the workers still
    trade after the close (AfterHours), and a rejection journaled between two separate reads made the
    summary's reasons add up to one more than its count (seen on the real node)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            counts = {table: int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE session = $1",
                                                     f"{ns}/{SESSION}"))
                      for table in ("orders", "fills", "rejections", "risk_events")}
            rows = await conn.fetch("SELECT reason, count(*) AS n FROM rejections WHERE session = $1 "
                                    "GROUP BY reason ORDER BY n DESC, reason", f"{ns}/{SESSION}")
        return counts, {str(r["reason"]): int(r["n"]) for r in rows}
    finally:
        await conn.close()


@dataclass
class StoryResult:
    """What happened, read back from the API and the journal."""

    phases: list[str] = field(default_factory=list)
    halts: list[dict[str, Any]] = field(default_factory=list)
    orders_at_halt: int = 0
    orders_after_halt: int = 0
    resumed: bool = False
    backup: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)      # journal: pre-trade rejections by reason
    backup_clock: str = ""                                         # session time the backup was seen finished
    summary: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)          # status.report: the day's final report
    reconciliation: dict[str, Any] = field(default_factory=dict)  # status.executor.reconciliation at the close
    events: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)     # firing alerts seen in Prometheus (with --prometheus)
    backup_series: list[dict[str, Any]] = field(default_factory=list)  # the Backup's metrics as Prometheus scraped them
    empty_backup_panels: list[str] = field(default_factory=list)  # dashboard backup queries without data


def _poll(probe: Callable[[], Any], timeout: float) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := probe():
            return value
        time.sleep(1)
    return None


def run_story(p: Platform, speed: float, timeout: float, backup_timeout: float = 180,
              monitoring: Monitoring | None = None) -> StoryResult:
    story = Story(p, timeout)
    result = StoryResult()
    dsn = p.journal_dsn
    ns = p.namespace

    story.say(f"apply a RiskPolicy (drill limits), a TradingSession (simulated exchange, clock x{speed:g}) "
              "and a one-shot Backup")
    p.kubectl("apply", "-n", ns, "-f", "-", input=manifests(speed))

    story.say("the pre-market checklist: workers ready, broker reachable, policy applied")
    story.wait("PreMarket", lambda st: st.get("phase") in ("PreMarket", "MarketOpen", "Halted"))
    story.wait("orders to flow", lambda st: (st.get("summary") or {}).get("orders", 0) > 0)

    story.say("orders flow; waiting for a risk limit to be breached (drill thresholds are tight)")
    st = story.wait("an automatic halt", lambda st: (st.get("halt") or {}).get("active", False))
    halt = st["halt"]
    result.halts.append(halt)
    story.note(f"[{session_clock(st)} session time] halt {halt['id']} raised by {halt['source']}: {halt['reason']}")
    time.sleep(1)  # in-flight orders settle; from here on nothing new may be sent
    result.orders_at_halt = asyncio.run(journal_counts(dsn, ns))["orders"]
    time.sleep(3)
    result.orders_after_halt = asyncio.run(journal_counts(dsn, ns))["orders"]
    story.note(f"the executor stopped sending: journaled orders {result.orders_at_halt} -> "
               f"{result.orders_after_halt} three seconds later")
    if monitoring is not None:
        alert = _poll(lambda: monitoring.alert("TradingSessionHalted", "firing", namespace=NS, session=SESSION), 60)
        if alert is None:
            story.note(f"Prometheus shows no TradingSessionHalted alert for {NS}/{SESSION} ({monitoring.url}/alerts)")
        else:
            result.alerts.append(alert)
            story.note(f"alert {alert['labels']['alertname']} firing for {NS}/{SESSION} "
                       f"(source {alert['labels'].get('source')}): {monitoring.url}/alerts")

    story.say("the risk owner restores the runbook limits (daily loss reduce 2 % / halt 3 %)")
    p.kubectl("patch", "riskpolicy", POLICY, "-n", ns, "--type=merge",
              "-p", json.dumps({"spec": {"limits": RUNBOOK_LIMITS}}))
    story.say(f"resume, naming the halt: kubectl patch tradingsession {SESSION} --type=merge -p "
              f"'{{\"spec\":{{\"resumeHaltId\":\"{halt['id']}\"}}}}'")
    p.kubectl("patch", "tradingsession", SESSION, "-n", ns, "--type=merge",
              "-p", json.dumps({"spec": {"resumeHaltId": halt["id"]}}))
    story.wait("the resume", lambda st: "halt" not in st)
    result.resumed = True
    story.note("resumed; phase " + story.session().get("phase", "-"))

    if story.backup is None:
        story.say("the one-shot backup (applied at the start) is still running; waiting for it")
    result.backup = story.wait_backup(backup_timeout)
    result.backup_clock = story.backup_clock
    if monitoring is not None:
        result.backup_series = _poll(lambda: monitoring.query(
            f'time() - trading_backup_last_success_timestamp_seconds{{namespace="{NS}", backup="{BACKUP}"}}'), 60) or []
        queries = [q for _, q in monitoring.panel_queries(NS, SESSION) if "trading_backup_" in q]
        _poll(lambda: all(monitoring.query(q) for q in queries), 30)
        result.empty_backup_panels = [q for q in queries if not monitoring.query(q)]
        story.note(f"backup age in Prometheus: {len(result.backup_series)} series "
                   f"({monitoring.url}/graph?g0.expr=time()-trading_backup_last_success_timestamp_seconds)")

    story.say("the trading day runs to its close")
    story.wait("AfterHours", lambda st: st.get("phase") in ("AfterHours", "Initializing")
               and any(t["to"] == "MarketClose" for t in st.get("transitions", [])))
    # The risk worker writes the day's report final when it sees the close (MarketClose or AfterHours).
    def final_report() -> dict[str, Any] | None:
        st = story.session()
        return st if (st.get("report") or {}).get("final") else None

    final = _poll(final_report, 60)
    if final is None:
        story.note("no final daily report in status.report within 60 s")
        final = story.session()
    result.report = final.get("report") or {}
    # The executor reconciles the broker's positions and the day's fills with the journal at the close.
    closed = _poll(lambda: ((story.session().get("executor") or {}).get("reconciliation") or {}).get("trigger")
                   == "Close" and story.session(), 60)
    result.reconciliation = ((closed or {}).get("executor") or {}).get("reconciliation") or {}
    story.note("end-of-day reconciliation: " + (_reconciliation_text(result.reconciliation) or "none within 60 s"))
    result.phases = [t["to"] for t in final.get("transitions", [])]
    result.summary = final.get("summary") or {}
    result.counts, result.rejections = asyncio.run(journal_totals(dsn, ns))
    events = json.loads(p.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    result.events = [e["reason"] for e in events if e["involvedObject"]["name"] == SESSION]
    return result


def _report_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The daily report's session figures (``kubectl trading report demo`` prints them all)."""
    if not report:
        return [("daily report", "none")]
    t = report.get("total") or {}

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    reasons = ", ".join(f"{r} {n}" for r, n in (report.get("rejectionsByReason") or {}).items()) or "none"
    return [("daily report", f"{report.get('day')} {'final' if report.get('final') else 'intraday'}: "
                             f"{t.get('trades', 0)} trades, win rate {fmt(t.get('winRatePct'), '.1f')} %, "
                             f"profit factor {fmt(t.get('profitFactor'), '.2f')}"),
            ("", f"avg win {fmt(t.get('averageWin'), '+.2f')}, avg loss {fmt(t.get('averageLoss'), '+.2f')} USD, "
                 f"Sharpe {fmt(report.get('sharpe'), '.4f')}, max drawdown {fmt(report.get('maxDrawdownPct'), '.4f')} %"),
            ("", f"rejections by reason: {reasons}")]


def _reconciliation_text(rec: dict[str, Any]) -> str:
    """The close reconciliation in one line (``kubectl trading reconcile demo --show`` prints it all)."""
    if not rec:
        return ""
    compared = f"{rec.get('positions', 0)} positions, {rec.get('fills', 0)} fills compared"
    if rec.get("clean"):
        return f"{rec.get('day')} close: clean ({compared})"
    kinds = ", ".join(sorted({str(d.get("kind")) for d in rec.get("differences") or []}))
    return f"{rec.get('day')} close: {len(rec.get('differences') or [])} difference(s) ({kinds}; {compared})"


def _rejection_rows(total: int, by_reason: dict[str, int]) -> list[tuple[str, str]]:
    """Pre-trade rejections: what they are, and how many of each reason."""
    reasons = ", ".join(f"{reason} {n}" for reason, n in by_reason.items()) or "none"
    return [("rejected pre-trade", f"{total} (order intents the executor's pre-trade checks refused before the "
                                   "broker: nothing sent)"),
            ("", f"by reason: {reasons}")]


def _pnl_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """Realized + unrealized = total P&L, and the same total as the daily P&L percentage."""
    realized, unrealized = float(s.get("realizedPnl", 0.0)), float(s.get("unrealizedPnl", 0.0))
    return [("realized P&L", f"{realized:+.2f} USD (closed trades)"),
            ("unrealized P&L", f"{unrealized:+.2f} USD (open positions at the last marks)"),
            ("total P&L", f"{realized + unrealized:+.2f} USD = realized + unrealized; "
                          f"{s.get('dailyPnlPct', 0.0):+.4f} % of start-of-day equity (daily P&L)")]


def summary_table(result: StoryResult) -> str:
    s = result.summary
    rows = [
        ("phases", " -> ".join(result.phases)),
        ("orders (journal)", str(result.counts.get("orders", 0))),
        ("fills (journal)", str(result.counts.get("fills", 0))),
        *_rejection_rows(result.counts.get("rejections", 0), result.rejections),
        ("risk events", str(result.counts.get("risk_events", 0))),
        *_pnl_rows(s),
        *_report_rows(result.report),
        ("reconciliation", _reconciliation_text(result.reconciliation) or "none"),
        ("halts", ", ".join(f"{h['id']} ({h['source']}: {h['reason']})" for h in result.halts) or "none"),
        ("backup", f"{result.backup.get('phase')} verified={result.backup.get('verified')} "
                   f"size={result.backup.get('sizeBytes')} bytes"
                   + (f" (done by {result.backup_clock} session time)" if result.backup_clock else "")),
    ]
    if result.alerts:
        rows.append(("alerts fired", ", ".join(f"{a['labels']['alertname']} ({a['labels'].get('namespace')}/"
                                                f"{a['labels'].get('session')})" for a in result.alerts)))
    width = max(len(k) for k, _ in rows)
    line = "-" * 72
    return "\n".join([line, *(f"{k:<{width}}  {v}" for k, v in rows), line])
