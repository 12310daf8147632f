"""A real Prometheus scraping the local platform, with the chart's own rules (rendered by helm).

Prometheus (Debian's package) runs on a loopback port with a temporary data directory and is
stopped by PID. Its scrape configuration is written from the local runtime's process list: one
target per worker process, labelled at scrape time with the session's namespace, name and role
(what the chart's PodMonitor does from pod labels), and the operator (its per-session series keep
their own labels: honor_labels, as the chart's ServiceMonitor). The drill drives a breach and a halt
and asserts through Prometheus' HTTP API that the matching alerts are active with the session's
identity, that every dashboard query returns series, and that every metric a rule or panel names is
scraped from a live process.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.drills.harness import Drill, wait_until
from trading_dev import procs
from trading_dev.controlplane import server
from trading_dev.platform import LocalPlatform
from trading_operator import names
from trading_operator.api.session import Role

pytestmark = [pytest.mark.drill, pytest.mark.e2e]

CHART = ROOT / "charts" / "trading-platform"
#: Metrics that exist only once a Backup has run (this drill runs none; tests/backup covers the exporter).
NEEDS_A_BACKUP = {"trading_backup_last_success_timestamp_seconds", "trading_backup_failed"}


def _helm() -> str:
    proc = subprocess.run(["bash", str(ROOT / "hack" / "install-helm.sh")], capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def _render(helm: str) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """The chart's rule groups, its dashboard, and the operator's job name, as helm renders them."""
    out = subprocess.run([helm, "template", "rel", str(CHART), "--set", "monitoring.prometheusRule.enabled=true",
                          "--set", "monitoring.dashboard.enabled=true"], capture_output=True, text=True, check=True)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    board = json.loads(next(d for d in docs if d["kind"] == "ConfigMap" and "trading-platform.json" in d["data"])
                       ["data"]["trading-platform.json"])
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    job = next(m for e in exprs if (m := re.search(r'up\{job="([^"]+)"\}', e)))
    return rule["spec"]["groups"], board, job.group(1)


def _operator_targets(platform: LocalPlatform) -> list[str]:
    """Every operator replica's /metrics (a standby exports its gauges at zero; the rules use max())."""
    return [f"127.0.0.1:{replica.env['TRADING_METRICS_PORT']}" for replica in platform.operators]


class Alertmanager:
    """Debian's Alertmanager on a loopback port (no cluster listener), receiving Prometheus' alerts."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.port = server.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        binary = shutil.which("prometheus-alertmanager")
        assert binary, "prometheus-alertmanager not found: run hack/install-sysdeps.sh"
        (self.workdir / "alertmanager.yml").write_text(yaml.safe_dump(
            {"route": {"receiver": "drill", "group_wait": "1s"}, "receivers": [{"name": "drill"}]}))
        log = open(self.workdir / "alertmanager.log", "wb")  # noqa: SIM115 - outlives this call
        self.proc = subprocess.Popen([binary, f"--config.file={self.workdir / 'alertmanager.yml'}",
                                      f"--storage.path={self.workdir / 'am-data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: _http_ok(f"http://127.0.0.1:{self.port}/-/ready"), timeout=60, what="Alertmanager ready",
                   hint=f"log: {self.workdir / 'alertmanager.log'}")
        return self

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/alerts", timeout=10) as resp:
            return list(json.loads(resp.read()))

    def stop(self) -> None:
        procs.stop_group(self.proc, 10)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


class Prometheus:
    def __init__(self, workdir: pathlib.Path, groups: list[dict[str, Any]]) -> None:
        self.workdir = workdir
        self.port = server.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))

    def start(self, jobs: list[dict[str, Any]], alertmanager: int) -> Prometheus:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: run hack/install-sysdeps.sh"
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(self.workdir / "rules.yaml")], "scrape_configs": jobs,
                  "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager}"]}]}]}}
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - outlives this call
        self.proc = subprocess.Popen([binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={self.workdir / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: _http_ok(f"http://127.0.0.1:{self.port}/-/ready"), timeout=60, what="Prometheus ready",
                   hint=f"log: {self.workdir / 'prometheus.log'}")
        return self

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def stop(self) -> None:
        procs.stop_group(self.proc, 10)


@pytest.fixture
def prometheus(platform: LocalPlatform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    started: list[Prometheus | Alertmanager] = []

    def start(drill: Drill) -> tuple[Prometheus, Alertmanager, dict[str, Any]]:
        groups, board, job = _render(_helm())
        workers = []
        for role in Role:
            for replica in drill.replicas(role):
                workers.append({"targets": [f"127.0.0.1:{replica.port}"],
                                "labels": {"namespace": drill.namespace, "session": drill.name,
                                           "role": names.ROLE_SLUG[role]}})
        assert workers
        jobs = [{"job_name": job, "honor_labels": True,
                 "static_configs": [{"targets": _operator_targets(platform)}]},
                {"job_name": "workers", "static_configs": workers}]
        workdir = tmp_path_factory.mktemp("prometheus")
        manager = Alertmanager(workdir).start()
        started.append(manager)
        prom = Prometheus(workdir, groups).start(jobs, manager.port)
        started.append(prom)
        return prom, manager, board

    yield start
    for part in reversed(started):
        part.stop()


def _alert(prom: Prometheus, name: str, **labels: str) -> dict[str, Any] | None:
    for alert in prom.api("alerts")["alerts"]:
        if alert["labels"].get("alertname") == name and all(alert["labels"].get(k) == v for k, v in labels.items()):
            return dict(alert)
    return None


def test_alerts_fire_with_the_sessions_identity_and_every_panel_has_data(make_drill: Callable[..., Drill],
                                                                        prometheus: Callable[..., Any]) -> None:
    d = make_drill(spec={"workers": {"inference": {"replicas": 1}}})
    wait_until(lambda: all(r.ready for r in d.replicas(Role.INFERENCE)), timeout=120, what="inference ready",
               hint=d.hint())
    prom, manager, board = prometheus(d)
    who = {"namespace": d.namespace, "session": d.name}

    # A breach on the simulated exchange: one position is the whole book (concentration 100 % > 30 %).
    out = d.order_outcome(d.send_intent("AAPL", "buy", 100))
    assert out.sent
    alert = wait_until(lambda: _alert(prom, "TradingConcentrationHigh", **who), timeout=60,
                       what="TradingConcentrationHigh active")
    assert alert["labels"]["role"] == "risk" and alert["state"] in ("pending", "firing")
    assert float(alert["value"]) > 30

    # A halt: the operator's per-session series fires at once, with the session and the halt's source.
    d.patch_spec({"halted": True, "haltReason": "alert drill"})
    halted = wait_until(lambda: (a := _alert(prom, "TradingSessionHalted", **who)) and a["state"] == "firing" and a,
                        timeout=60, what="TradingSessionHalted firing")
    assert halted["labels"]["source"] == "User"
    wait_until(lambda: any(a["labels"].get("alertname") == "TradingSessionHalted"
                           and a["labels"].get("session") == d.name and a["labels"].get("namespace") == d.namespace
                           for a in manager.alerts()),
               timeout=60, what="TradingSessionHalted received by Alertmanager")

    # Every dashboard query returns series for this session (Grafana's variables replaced by the drill's).
    time.sleep(20)  # rates over [5m] and [30m] need a few scrapes of every counter
    empty = []
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$namespace", d.namespace).replace("$session", d.name)
            if set(re.findall(r"\btrading_[a-z_]+", expr)) & NEEDS_A_BACKUP:
                continue
            if not prom.query(expr):
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    # Every metric a rule or panel names is scraped from a live process.
    named = set()
    for group in yaml.safe_load((prom.workdir / "rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            named |= set(re.findall(r"\b(?:trading|process)_[a-z_]+", rule["expr"]))
    for panel in board["panels"]:
        for target in panel["targets"]:
            named |= set(re.findall(r"\b(?:trading|process)_[a-z_]+", target["expr"]))
    # Scraped at some point of the drill (the executor's heartbeat age exists only before the halt).
    missing = sorted(n for n in named - NEEDS_A_BACKUP
                     if not prom.query(f'count(last_over_time({{__name__="{n}"}}[10m]))'))
    assert not missing, f"named by a rule or panel but exported by no live process: {missing}"

    # A silent feed: market data stopped, the stalest quote ages past 60 s and the alert fires (no `for:`).
    d.patch_spec({"workers": {"marketData": {"replicas": 0}}})
    stale = wait_until(lambda: (a := _alert(prom, "TradingMarketDataStale", **who)) and a["state"] == "firing" and a,
                       timeout=120, what="TradingMarketDataStale firing")
    assert stale["labels"]["severity"] == "critical" and float(stale["value"]) > 60
