"""Drill: credentials reach the workers by reference and appear nowhere else.

Every drill namespace holds the journal DSN (with a password) and broker keys as Secrets, and the
drill platform's operator names the journal Secret (``harness.OPERATOR_ENV``), so every drill of
this package already ran with them. This drill trades, halts and resumes one more session, proves
the workers really used the Secret (the executor journaled through it), then scans everything the
run left behind for the secret values: every log file of the operator and of every worker process,
every Deployment, ConfigMap, Job and CronJob, every TradingSession (status included), every Event,
and each worker's ``/metrics``.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable

import pytest

from tests.drills.harness import JOURNAL_SECRET, SECRET_VALUES, Drill
from trading_operator import names
from trading_operator.api.session import Role

pytestmark = [pytest.mark.drill, pytest.mark.e2e]
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@\"']*:[^@\s/\"']+@", re.IGNORECASE)


def test_no_secret_value_in_logs_objects_events_or_metrics(make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    executor = json.loads(d.platform.kubectl("get", "deployment", names.deployment(d.name, Role.EXECUTOR),
                                             "-n", d.namespace, "-o", "json").stdout)
    env = {e["name"]: e for e in executor["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRADING_JOURNAL_DSN"] == {"name": "TRADING_JOURNAL_DSN",
                                          "valueFrom": {"secretKeyRef": {"name": JOURNAL_SECRET, "key": "dsn"}}}
    assert env["APCA_API_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "drill-broker"
    # The executor reached the journal through the Secret's DSN: the order is journaled before it is sent.
    order = d.order_outcome(d.send_intent("AAPL", "buy", 10))
    assert order.sent and order.client_order_id in [o["client_order_id"] for o in d.journal_orders()], order
    d.patch_spec({"halted": True, "haltReason": "secret drill"})
    d.wait_status(lambda s: (s.get("executor") or {}).get("haltHandled"), "the executor to handle the halt")
    d.patch_spec({"halted": False, "haltReason": None})
    d.wait_status(lambda s: s.get("phase") == "MarketOpen" and s.get("halt") is None, "resumed")

    texts: dict[str, str] = {}
    for path in sorted(d.platform.workdir.rglob("*.log")):
        texts[str(path)] = path.read_text(errors="replace")
    assert any("operator.log" in p for p in texts) and any(".drill-executor-" in p for p in texts), list(texts)
    for what in ("deployments", "configmaps", "jobs", "cronjobs", "events", "tradingsessions", "backups"):
        texts[f"kubectl get {what} -A"] = d.platform.kubectl("get", what, "-A", "-o", "json").stdout
    for role in (Role.MARKET_DATA, Role.RISK, Role.EXECUTOR):
        with urllib.request.urlopen(f"http://127.0.0.1:{d.replicas(role)[0].port}/metrics", timeout=5) as resp:
            texts[f"{role} /metrics"] = resp.read().decode()
    sessions = json.loads(texts["kubectl get tradingsessions -A"])["items"]
    assert sessions and all("status" in s for s in sessions)
    # The platform's object store (models, backups): its secret key reaches pods only by secretKeyRef too.
    values = (*SECRET_VALUES, *((d.platform.s3.secret_key,) if d.platform.s3 is not None else ()))
    assert d.platform.s3 is not None, "the local platform runs the object store"
    leaks = [(where, value) for where, text in texts.items() for value in values if value in text]
    leaks += [(where, m.group(0)) for where, text in texts.items() for m in URL_WITH_PASSWORD.finditer(text)]
    assert not leaks, f"secret material found: {leaks[:10]}"
