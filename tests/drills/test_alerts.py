"""A real Prometheus and Alertmanager scraping the local platform, with the chart's own rules.

``trading_dev.monitoring`` starts both (Debian's packages) on loopback ports and loads the rules and
dashboard helm renders from the chart; Prometheus finds the workers from the local runtime's process
list, labelled with the session's namespace, name and role at scrape time. The drill drives a breach on
the simulated exchange, a halt and a silent feed, and asserts through Prometheus' HTTP API that the
matching alerts are active with the session's identity (the halt reaching Alertmanager), that every
dashboard query returns series, and that every metric a rule or panel names is scraped from a live
process. Backup metrics need a Backup run: the end-to-end story checks them (tests/e2e/test_story.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.drills.harness import Drill
from tests.fixtures.waiting import eventually_sync
from trading_dev.monitoring import Monitoring
from trading_dev.platform import LocalPlatform
from trading_operator.api.session import Role

pytestmark = [pytest.mark.drill, pytest.mark.e2e]

#: Metrics that exist only once a Backup has run (this drill runs none; the e2e story does).
NEEDS_A_BACKUP = {"trading_backup_last_success_timestamp_seconds", "trading_backup_failed"}


@pytest.fixture
def monitoring(platform: LocalPlatform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    with Monitoring(platform, tmp_path_factory.mktemp("monitoring")) as mon:
        yield mon


def test_alerts_fire_with_the_sessions_identity_and_every_panel_has_data(make_drill: Callable[..., Drill],
                                                                        monitoring: Monitoring) -> None:
    d = make_drill(spec={"workers": {"inference": {"replicas": 1}}})
    eventually_sync(lambda: all(r.ready for r in d.replicas(Role.INFERENCE)), timeout=120, what="inference ready",
                    hint=d.hint())
    who = {"namespace": d.namespace, "session": d.name}
    # Prometheus scrapes every worker of the session, each with its identity.
    targets = eventually_sync(lambda: (t := [x for x in monitoring.api("targets")["activeTargets"]
                                        if x["labels"].get("session") == d.name and x["health"] == "up"])
                              and len(t) >= 4 and t, timeout=30, what="the session's workers scraped")
    assert {t["labels"]["role"] for t in targets} >= {"market-data", "risk", "executor", "inference"}

    # A breach on the simulated exchange: one position is the whole book (concentration 100 % > 30 %).
    assert d.order_outcome(d.send_intent("AAPL", "buy", 100)).sent
    alert = eventually_sync(lambda: monitoring.alert("TradingConcentrationHigh", **who), timeout=60,
                            what="TradingConcentrationHigh active")
    assert alert["labels"]["role"] == "risk" and alert["state"] in ("pending", "firing")  # for: 5m (promtool)
    assert float(alert["value"]) > 30

    # An on-demand reconciliation (kubectl trading reconcile): the executor exports its differences gauge
    # only once it has reconciled, and the TradingReconciliationMismatch rule names it.
    d.platform.kubectl("annotate", "tradingsession", d.name, "-n", d.namespace, "--overwrite",
                       "trading.dev/reconcile-request=alert-drill")
    d.wait_status(lambda s: ((s.get("executor") or {}).get("reconciliation") or {}).get("request") == "alert-drill",
                  "the on-demand reconciliation", timeout=60)

    # A halt: the operator's per-session series fires at once, with the session and the halt's source.
    d.patch_spec({"halted": True, "haltReason": "alert drill"})
    halted = eventually_sync(lambda: monitoring.alert("TradingSessionHalted", "firing", **who), timeout=60,
                             what="TradingSessionHalted firing")
    assert halted["labels"]["source"] == "User"
    eventually_sync(lambda: any(a["labels"].get("alertname") == "TradingSessionHalted"
                           and {k: a["labels"].get(k) for k in who} == who for a in monitoring.received()),
                    timeout=60, what="TradingSessionHalted received by Alertmanager")

    # Every dashboard query returns series for this session.
    time.sleep(20)  # rates need a few scrapes of every counter
    empty = [f"{title}: {expr}" for title, expr in monitoring.panel_queries(d.namespace, d.name)
             if not any(n in expr for n in NEEDS_A_BACKUP) and not monitoring.query(expr)]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    # Every metric a rule or panel names was scraped from a live process during the drill (the executor's
    # heartbeat age exists only in trading phases, i.e. before the halt).
    missing = sorted(n for n in monitoring.named_metrics() - NEEDS_A_BACKUP
                     if not monitoring.query(f'count(last_over_time({{__name__="{n}"}}[10m]))'))
    assert not missing, f"named by a rule or panel but exported by no live process: {missing}"
    assert not monitoring.query('count(last_over_time({__name__="trading_no_such_metric"}[10m]))')

    # A silent feed: market data stopped, the stalest quote ages past 60 s and the alert fires (no `for:`).
    d.patch_spec({"workers": {"marketData": {"replicas": 0}}})
    stale = eventually_sync(lambda: monitoring.alert("TradingMarketDataStale", "firing", **who), timeout=120,
                            what="TradingMarketDataStale firing")
    assert stale["labels"]["severity"] == "critical" and float(stale["value"]) > 60
