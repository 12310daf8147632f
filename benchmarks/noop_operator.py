"""A kopf operator that watches what the trading operator watches and does nothing: the scale baseline.

``benchmarks.scale`` runs it beside the real operator, on the same objects,
in the same run, so the real operator's memory, idle CPU and event
throughput can be read as "kopf's floor" times a ratio. It has the same
kopf settings as ``trading_operator.handlers.configure`` (batching, watch
timeouts, worker pool) and the same watches (TradingSessions, RiskPolicies,
the operator's Deployments by label), but only ``on.event`` handlers (async:
kopf runs sync ones in threads) that count what they saw: no daemons, no
indexes, no finalizers, no API writes: kopf's floor for these objects.

It serves two gauges on ``NOOP_METRICS_PORT``: sessions and deployments seen
(distinct names), and the wall time of the last new one.

Run (the benchmark does this)::

    KUBECONFIG=... NOOP_METRICS_PORT=9999 .venv/bin/python -m benchmarks.noop_operator
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import kopf
import prometheus_client

SEEN = prometheus_client.Gauge("noop_seen", "Distinct objects seen.", ["kind"])
LAST_NEW = prometheus_client.Gauge("noop_last_new_timestamp_seconds", "Wall time the last new object was seen.")
_seen: dict[str, set[tuple[str, str]]] = {"sessions": set(), "deployments": set(), "policies": set()}


def _saw(kind: str, namespace: str | None, name: str | None) -> None:
    key = (namespace or "", name or "")
    if key not in _seen[kind]:
        _seen[kind].add(key)
        SEEN.labels(kind).set(len(_seen[kind]))
        LAST_NEW.set(time.time())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.batching.batch_window = 0.01
    settings.execution.max_workers = 32
    prometheus_client.start_http_server(int(os.environ.get("NOOP_METRICS_PORT", "8090")))


@kopf.on.event("trading.dev", "v1alpha1", "tradingsessions")
async def session_event(namespace: str | None, name: str | None, **_: Any) -> None:
    _saw("sessions", namespace, name)


@kopf.on.event("trading.dev", "v1alpha1", "riskpolicies")
async def policy_event(namespace: str | None, name: str | None, **_: Any) -> None:
    _saw("policies", namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "trading-operator"})
async def deployment_event(namespace: str | None, name: str | None, **_: Any) -> None:
    _saw("deployments", namespace, name)


def main() -> None:
    import argparse

    argparse.ArgumentParser(prog="python -m benchmarks.noop_operator", description=__doc__.splitlines()[0],
                            epilog="Environment: KUBECONFIG, NOOP_METRICS_PORT (benchmarks.scale starts it).",
                            ).parse_args()
    logging.basicConfig(level=logging.WARNING)
    kopf.configure(verbose=False)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(standalone=True, clusterwide=True)


if __name__ == "__main__":
    main()
