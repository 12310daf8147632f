"""``make demo``: the whole platform on this machine, narrating one trading day.

It starts the local control plane, Redis, PostgreSQL, the operator and the
local process runtime (``trading_dev.platform``), then tells the story a
trading-ops engineer cares about:

1. a RiskPolicy (drill thresholds), a TradingSession on the simulated
   exchange with a fast simulated clock, and a one-shot Backup are applied;
2. the phases advance on the XNYS calendar and orders flow (progress line);
3. a risk limit is breached: the risk worker halts the session through its
   status; the executor stops sending (the journal's order count freezes);
4. the risk owner restores the runbook limits and the demo resumes with the
   documented command, naming the halt id;
5. the backup completes and verifies;
6. the day runs to its close; a summary table ends the run.

Ctrl-C at any point stops everything cleanly (workers get SIGTERM first).
The admin kubeconfig is left in ``.dev/kubeconfig`` while it runs, so
``kubectl --kubeconfig .dev/kubeconfig get trading`` works in another terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from trading_dev.platform import ROOT, LocalPlatform, PlatformError

NS = "default"
SESSION = "demo"
POLICY = "demo-limits"
BACKUP = "demo-backup"

DRILL_LIMITS = {"dailyLoss": {"reducePct": 0.005, "haltPct": 0.01},
                "maxDrawdown": {"thresholdPct": 0.01, "action": "Halt"}}
RUNBOOK_LIMITS = {"dailyLoss": {"reducePct": 2, "haltPct": 3},
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
    return "\n---\n".join(json.dumps(m) for m in (policy, session, backup))


class Story:
    def __init__(self, platform: LocalPlatform, timeout: float) -> None:
        self.p = platform
        self.deadline = time.monotonic() + timeout
        self.last_line = 0.0
        self.halts: list[dict[str, Any]] = []

    def say(self, text: str) -> None:
        print(f"\n==> {text}", flush=True)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self.p.kubectl("get", kind, name, "-n", NS, "-o", "json").stdout)

    def session(self) -> dict[str, Any]:
        return self.get("tradingsession", SESSION).get("status") or {}

    def progress(self, st: dict[str, Any]) -> None:
        if time.monotonic() - self.last_line < 2:
            return
        self.last_line = time.monotonic()
        summary = st.get("summary") or {}
        halt = st.get("halt") or {}
        clock = (st.get("clock") or "")[:16].replace("T", " ")
        print(f"    [{clock} UTC] phase {st.get('phase', '-'):<12} state {st.get('tradingState', '-'):<8} "
              f"orders {summary.get('orders', 0):>4}  fills {summary.get('fills', 0):>4}  "
              f"P&L {summary.get('dailyPnlPct', 0.0):+.4f}%"
              + (f"  HALTED ({halt.get('source')}: {halt.get('reason')})" if halt.get("active") else ""), flush=True)

    def wait(self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 300) -> dict[str, Any]:
        end = min(self.deadline, time.monotonic() + timeout)
        while time.monotonic() < end:
            st = self.session()
            self.progress(st)
            if predicate(st):
                return st
            time.sleep(0.5)
        raise PlatformError(f"timed out waiting for {what}; logs in {self.p.logs} and {self.p.workdir / 'runtime'}")


async def journal_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for table in ("orders", "fills", "rejections", "risk_events"):
            out[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE session = $1",
                                                 f"{NS}/{SESSION}"))
        return out
    finally:
        await conn.close()


def run(args: argparse.Namespace) -> int:
    workdir = ROOT / ".dev"
    print("trading-platform demo: starting the local control plane, Redis, PostgreSQL, the operator and the "
          "local process runtime ...", flush=True)
    started = time.monotonic()
    with LocalPlatform(workdir, kubeconfig_out=workdir / "kubeconfig") as p:
        print(f"    ready in {time.monotonic() - started:.0f}s — in another terminal: "
              f"kubectl --kubeconfig {workdir / 'kubeconfig'} get trading", flush=True)
        story = Story(p, args.timeout)

        story.say(f"apply a RiskPolicy (drill limits), a TradingSession (simulated exchange, clock x{args.speed:g}) "
                  "and a one-shot Backup")
        p.kubectl("apply", "-n", NS, "-f", "-", input=manifests(args.speed))

        story.say("the pre-market checklist: workers ready, broker reachable, policy applied")
        story.wait("PreMarket", lambda st: st.get("phase") in ("PreMarket", "MarketOpen", "Halted"))
        story.wait("orders to flow", lambda st: (st.get("summary") or {}).get("orders", 0) > 0)

        story.say("orders flow; waiting for a risk limit to be breached (drill thresholds are tight)")
        st = story.wait("an automatic halt", lambda st: (st.get("halt") or {}).get("active", False))
        halt = st["halt"]
        story.halts.append(halt)
        print(f"    halt {halt['id']} raised by {halt['source']}: {halt['reason']}", flush=True)
        frozen = asyncio.run(journal_counts(p.postgres.dsn if p.postgres else ""))["orders"]
        time.sleep(3)
        after = asyncio.run(journal_counts(p.postgres.dsn if p.postgres else ""))["orders"]
        print(f"    the executor stopped sending: journaled orders {frozen} -> {after} three seconds later", flush=True)

        story.say("the risk owner restores the runbook limits (daily loss reduce 2 % / halt 3 %)")
        p.kubectl("patch", "riskpolicy", POLICY, "-n", NS, "--type=merge",
                  "-p", json.dumps({"spec": {"limits": RUNBOOK_LIMITS}}))
        command = (f"kubectl patch tradingsession {SESSION} --type=merge -p "
                   f"'{{\"spec\":{{\"resumeHaltId\":\"{halt['id']}\"}}}}'")
        story.say(f"resume, naming the halt: {command}")
        p.kubectl("patch", "tradingsession", SESSION, "-n", NS, "--type=merge",
                  "-p", json.dumps({"spec": {"resumeHaltId": halt["id"]}}))
        story.wait("the resume", lambda st: not (st.get("halt") or {}).get("active", True))
        print("    resumed; phase " + story.session().get("phase", "-"), flush=True)

        story.say("the backup: journal, Redis, models, resources — verified by a scratch restore")
        backup = _wait_backup(story)

        story.say("the trading day runs to its close")
        story.wait("AfterHours", lambda st: st.get("phase") in ("AfterHours", "Initializing")
                   and any(t["to"] == "MarketClose" for t in st.get("transitions", [])))
        final = story.session()
        counts = asyncio.run(journal_counts(p.postgres.dsn if p.postgres else ""))
        _summary(final, counts, story.halts, backup)
    print("demo finished; everything stopped.", flush=True)
    return 0


def _wait_backup(story: Story) -> dict[str, Any]:
    end = time.monotonic() + 180
    while time.monotonic() < end:
        status = story.get("backup", BACKUP).get("status") or {}
        story.progress(story.session())
        if status.get("phase") in ("Completed", "Failed"):
            print(f"    backup {status.get('phase')}: verified={status.get('verified')} "
                  f"size={status.get('sizeBytes')} bytes at {status.get('location')}", flush=True)
            return status
        time.sleep(1)
    print("    backup did not finish in time", flush=True)
    return {"phase": "Timeout"}


def _summary(st: dict[str, Any], counts: dict[str, int], halts: list[dict[str, Any]], backup: dict[str, Any]) -> None:
    summary = st.get("summary") or {}
    rows = [
        ("phases", " -> ".join(t["to"] for t in st.get("transitions", []))),
        ("orders (journal)", str(counts["orders"])),
        ("fills (journal)", str(counts["fills"])),
        ("rejected pre-trade", str(counts["rejections"])),
        ("risk events", str(counts["risk_events"])),
        ("realized P&L", f"{summary.get('realizedPnl', 0.0):+.2f} USD"),
        ("daily P&L", f"{summary.get('dailyPnlPct', 0.0):+.4f} %"),
        ("halts", ", ".join(f"{h['id']} ({h['source']})" for h in halts) or "none"),
        ("backups", f"{backup.get('phase')} verified={backup.get('verified')}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "-" * 72)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("-" * 72, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole platform locally and narrate a trading day.")
    parser.add_argument("--speed", type=float, default=600.0, help="simulated seconds per real second")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--short", action="store_true", help="CI mode: a faster clock")
    args = parser.parse_args(argv)
    if args.short:
        args.speed = max(args.speed, 900.0)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: everything stopped cleanly.", flush=True)
        return 130
    except PlatformError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
