"""``make demo``: the whole platform on this machine, narrating one trading day.

It starts the local control plane, Redis, PostgreSQL, the operator and the
local process runtime (``trading_dev.platform``), then tells the story a
trading-ops engineer cares about:

1. a RiskPolicy (drill thresholds), a TradingSession on the simulated
   exchange with a fast simulated clock, and a one-shot Backup are applied;
2. the phases advance on the XNYS calendar and orders flow (a progress line stamped with the
   session's simulated clock, as is every event told);
3. a risk limit is breached: the risk worker halts the session through its
   status; the executor stops sending (the journal's order count freezes);
4. the risk owner restores the runbook limits and the demo resumes with the
   documented command, naming the halt id;
5. the backup, which runs from the start, is told when it completes and verifies (wherever that
   falls in the story);
6. the day runs to its close; a summary table ends the run: P&L as realized + unrealized = total,
   pre-trade rejections explained and counted by reason.

``--prometheus`` also starts a real Prometheus and Alertmanager beside the platform, with the
chart's alert rules (``trading_dev.monitoring``), prints where their alerts and graphs are, and
shows the breach as a firing alert.

Ctrl-C at any point stops everything cleanly (workers get SIGTERM first).
The admin kubeconfig is left in ``.dev/kubeconfig`` while it runs, so
``kubectl --kubeconfig .dev/kubeconfig get trading`` works in another terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from trading_dev import monitoring as monitoring_mod
from trading_dev import story
from trading_dev.platform import ROOT, LocalPlatform, PlatformError


def run(args: argparse.Namespace) -> int:
    workdir = ROOT / ".dev"
    print("trading-platform demo: starting the local control plane, Redis, PostgreSQL, the operator and the "
          "local process runtime ...", flush=True)
    started = time.monotonic()
    with LocalPlatform(workdir, kubeconfig_out=workdir / "kubeconfig") as p:
        print(f"    ready in {time.monotonic() - started:.0f}s; in another terminal: "
              f"kubectl --kubeconfig {workdir / 'kubeconfig'} get trading", flush=True)
        with contextlib.ExitStack() as stack:
            mon = None
            if args.prometheus:
                mon = stack.enter_context(monitoring_mod.Monitoring(p, workdir / "monitoring", scrape_interval="2s"))
                print(f"    Prometheus (the chart's alert rules): {mon.url}/alerts  graphs: {mon.url}/graph  "
                      f"Alertmanager: {mon.alertmanager_url}", flush=True)
            result = story.run_story(p, args.speed, args.timeout, monitoring=mon)
            print("\n" + story.summary_table(result), flush=True)
    print("demo finished; everything stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole platform locally and narrate a trading day.")
    parser.add_argument("--speed", type=float, default=600.0, help="simulated seconds per real second")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--short", action="store_true", help="CI mode: a faster clock")
    parser.add_argument("--prometheus", action="store_true",
                        help="also run Prometheus and Alertmanager with the chart's alert rules")
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
