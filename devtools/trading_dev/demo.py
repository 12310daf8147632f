"""``make demo``: the whole platform on this machine, narrating one trading day.

By default it runs on a real single-node Kubernetes cluster, as users deploy it
(``--runtime=cluster``, ``trading_dev.cluster.platform``): the binaries and images
(built once, cached), the node, then ``helm install`` of the chart with Redis and
PostgreSQL as pods; the operator and every worker run as pods under the real
kubelet. It needs root (the node's containerd, cgroups and network namespace) and
the machine's one cluster lock. ``--runtime=process`` is the light runtime instead
(``trading_dev.platform``): the API-server-only control plane, Redis, PostgreSQL, the
operator and the workers as local processes, ready in seconds. Either way it then
tells the story a trading-ops engineer cares about:

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

``--prometheus`` (process runtime only; it is the default runtime with it) also
starts a real Prometheus and Alertmanager beside the platform, with the chart's
alert rules (``trading_dev.monitoring``), prints where their alerts and graphs
are, and shows the breach as a firing alert.

Ctrl-C at any point stops everything cleanly (workers get SIGTERM first; the
cluster removes everything it made). The admin kubeconfig is at
``.dev/kubeconfig`` while it runs (removed when it stops), so ``kubectl --kubeconfig
.dev/kubeconfig get trading -A`` works in another terminal. ``--record FILE`` writes what happened
(the story's result) as JSON, for the end-to-end test.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pathlib
import sys
import time

from trading_dev import monitoring as monitoring_mod
from trading_dev import story
from trading_dev.platform import ROOT, LocalPlatform, PlatformError

# (default, --short) simulated seconds per real second, by runtime.
CLOCK_SPEEDS = {"process": (600.0, 900.0), "cluster": (180.0, 240.0)}


def record(result: story.StoryResult, path: str) -> None:
    if path:
        pathlib.Path(path).write_text(json.dumps(dataclasses.asdict(result), indent=1))


def run_cluster(args: argparse.Namespace) -> int:
    from trading_dev.cluster import measure, node
    from trading_dev.cluster.platform import ClusterPlatform

    workdir = ROOT / ".dev"
    print("trading-platform demo on a real single-node Kubernetes cluster (the chart as users install it); "
          "--runtime=process for the light local runtime", flush=True)
    started = time.monotonic()
    try:
        platform = ClusterPlatform(workdir / "cluster-demo", kubeconfig_out=workdir / "kubeconfig")
        with platform as p:
            print(f"    ready in {time.monotonic() - started:.0f}s; in another terminal: "
                  f"kubectl --kubeconfig {workdir / 'kubeconfig'} -n {p.namespace} get trading,pods", flush=True)
            result = story.run_story(p, args.speed, args.timeout)
            record(result, args.record)
            print("\n" + story.summary_table(result), flush=True)
            print("\nresident memory with the session running (python -m trading_dev.cluster.measure):\n"
                  + measure.table(), flush=True)
    except node.ClusterBusy as exc:
        raise PlatformError(f"{exc}; or run `make demo DEMO_ARGS=--runtime=process`") from exc
    print(f"demo finished; the cluster is stopped and removed (pod logs in {workdir / 'cluster-demo' / 'pods'}).",
          flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.runtime == "cluster":
        return run_cluster(args)
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
            record(result, args.record)
            print("\n" + story.summary_table(result), flush=True)
    print("demo finished; everything stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole platform locally and narrate a trading day.")
    parser.add_argument("--speed", type=float, default=None,
                        help="simulated seconds per real second (default: 600 on the process runtime, 180 on the "
                             "cluster, where the worker pods take up to a minute to be ready)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--short", action="store_true", help="CI mode: a faster clock")
    parser.add_argument("--prometheus", action="store_true",
                        help="also run Prometheus and Alertmanager with the chart's alert rules (process runtime)")
    parser.add_argument("--runtime", choices=("cluster", "process"), default=None,
                        help="cluster (default): the chart on a real single-node cluster, pods under a real kubelet; "
                             "process: the light local runtime (workers as local processes, ready in seconds)")
    parser.add_argument("--record", default="", metavar="FILE", help="write what happened as JSON to FILE")
    args = parser.parse_args(argv)
    if args.runtime is None:
        args.runtime = "process" if args.prometheus else "cluster"
    if args.prometheus and args.runtime == "cluster":
        parser.error("--prometheus runs beside the process runtime only: add --runtime=process")
    # The simulated day starts when the session is applied and does not wait for the workers: on the real node
    # their pods take 30-60 s to be ready (Python, torch), which at 900x is past the close. Its day is slower.
    default_speed, short_speed = CLOCK_SPEEDS[args.runtime]
    if args.speed is None:
        args.speed = default_speed
    if args.short:
        args.speed = max(args.speed, short_speed)
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
