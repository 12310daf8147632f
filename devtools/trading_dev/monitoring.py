"""A real Prometheus and Alertmanager beside the local platform, with the chart's own rules.

Both are Debian's packages (``hack/install-sysdeps.sh``), started on loopback ports with temporary
data directories and stopped by PID. The rules and the dashboard are the Helm chart's, rendered by
helm (``hack/install-helm.sh``), never a copy.

Session identity the conventional way, at scrape time: Prometheus discovers the workers through a
file (``file_sd``) that a thread rewrites from the local runtime's process list, one target per
process labelled ``namespace``, ``session`` and ``role`` from the worker's environment (the same
values as the pod labels the chart's PodMonitor relabels from). The operator replicas are one job
named as the chart's ServiceMonitor's, with ``honor_labels`` (its per-session series carry their
own ``namespace`` and ``session``).

Used by the alert drill (``tests/drills/test_alerts.py``), the end-to-end story and
``make demo DEMO_ARGS=--prometheus``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import yaml

from trading_dev import procs
from trading_dev.controlplane import server
from trading_dev.platform import ROOT, LocalPlatform, PlatformError
from trading_operator import names
from trading_operator.api import workerconfig as wc
from trading_operator.api.session import Role

CHART = ROOT / "charts" / "trading-platform"
WORKERS_JOB = "trading-workers"
RELEASE = "trading"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _wait_ready(url: str, what: str, log: pathlib.Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PlatformError(f"{what} exited with {proc.returncode}; see {log}")
        if _http_ok(url):
            return
        time.sleep(0.2)
    raise PlatformError(f"{what} not ready within {timeout:g}s; see {log}")


def helm_binary() -> str:
    proc = subprocess.run(["bash", str(ROOT / "hack" / "install-helm.sh")], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise PlatformError(f"hack/install-helm.sh failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def render_chart(helm: str) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """The chart's rule groups, its dashboard and the operator's scrape job name, as helm renders them."""
    proc = subprocess.run([helm, "template", RELEASE, str(CHART), "--set", "monitoring.prometheusRule.enabled=true",
                           "--set", "monitoring.dashboard.enabled=true"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PlatformError(f"helm template failed: {proc.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    board = json.loads(next(d for d in docs if d["kind"] == "ConfigMap" and "trading-platform.json" in d["data"])
                       ["data"]["trading-platform.json"])
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    job = next(m.group(1) for e in exprs if (m := re.search(r'up\{job="([^"]+)"\}', e)))
    return list(rule["spec"]["groups"]), board, job


def worker_targets(platform: LocalPlatform) -> list[dict[str, Any]]:
    """file_sd target groups: every running worker process with its session's identity."""
    runtime = platform.runtime
    groups = []
    for pods in list(runtime.pods.values()) if runtime else []:
        for replica in list(pods.replicas):
            session, role = replica.env.get(wc.ENV_SESSION, ""), replica.env.get(wc.ENV_ROLE, "")
            if session.count("/") != 1 or role not in {r.value for r in Role} or not replica.alive():
                continue
            namespace, name = session.split("/")
            groups.append({"targets": [f"127.0.0.1:{replica.port}"],
                           "labels": {"namespace": namespace, "session": name,
                                      "role": names.ROLE_SLUG[Role(role)]}})
    return sorted(groups, key=lambda g: g["targets"][0])


class Monitoring:
    """Alertmanager + Prometheus scraping ``platform``, loading the chart's rules."""

    def __init__(self, platform: LocalPlatform, workdir: pathlib.Path, scrape_interval: str = "1s") -> None:
        self.platform = platform
        self.workdir = workdir
        self.scrape_interval = scrape_interval
        self.prometheus_port = server.free_port()
        self.alertmanager_port = server.free_port()
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.alertmanager: subprocess.Popen[bytes] | None = None
        self.groups: list[dict[str, Any]] = []
        self.board: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def __enter__(self) -> Monitoring:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> Monitoring:
        binaries = {n: shutil.which(n) for n in ("prometheus", "prometheus-alertmanager")}
        if not all(binaries.values()):
            raise PlatformError(f"not found: {[n for n, b in binaries.items() if not b]}; run hack/install-sysdeps.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for data in ("prometheus-data", "alertmanager-data"):  # a previous run's series would mislead
            shutil.rmtree(self.workdir / data, ignore_errors=True)
        self.groups, self.board, operator_job = render_chart(helm_binary())
        (self.workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": self.groups}))
        self._write_targets()
        operators = [f"127.0.0.1:{o.env['TRADING_METRICS_PORT']}" for o in self.platform.operators]
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(self.workdir / "rules.yaml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]},
            "scrape_configs": [
                {"job_name": operator_job, "honor_labels": True, "static_configs": [{"targets": operators}]},
                {"job_name": WORKERS_JOB, "file_sd_configs": [{"files": [str(self.workdir / "workers.json")],
                                                                "refresh_interval": "1s"}]},
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        (self.workdir / "alertmanager.yml").write_text(yaml.safe_dump(
            {"route": {"receiver": "local", "group_wait": "1s"}, "receivers": [{"name": "local"}]}))
        self.alertmanager = self._spawn("alertmanager", [
            str(binaries["prometheus-alertmanager"]), f"--config.file={self.workdir / 'alertmanager.yml'}",
            f"--storage.path={self.workdir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self.alertmanager_port}", "--cluster.listen-address="])
        _wait_ready(f"{self.alertmanager_url}/-/ready", "Alertmanager", self.workdir / "alertmanager.log",
                    self.alertmanager)
        self.prometheus = self._spawn("prometheus", [
            str(binaries["prometheus"]), f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}"])
        _wait_ready(f"{self.url}/-/ready", "Prometheus", self.workdir / "prometheus.log", self.prometheus)
        self._thread = threading.Thread(target=self._follow, name="monitoring-targets", daemon=True)
        self._thread.start()
        return self

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "wb") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _write_targets(self) -> None:
        path = self.workdir / "workers.json"
        text = json.dumps(worker_targets(self.platform), indent=1)
        if path.exists() and path.read_text() == text:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def _follow(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._write_targets()
            except (RuntimeError, OSError):  # the runtime changed its process list meanwhile: next round
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        procs.stop_group(self.prometheus, 10)
        procs.stop_group(self.alertmanager, 10)

    # ------------------------------------------------------------------ queries

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise PlatformError(f"Prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def alert(self, name: str, state: str | None = None, **labels: str) -> dict[str, Any] | None:
        """An active alert (pending or firing; ``state`` narrows it) whose labels include ``labels``."""
        for alert in self.api("alerts")["alerts"]:
            lab = alert["labels"]
            if lab.get("alertname") == name and all(lab.get(k) == v for k, v in labels.items()) \
                    and (state is None or alert["state"] == state):
                return dict(alert)
        return None

    def received(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (sent to it by Prometheus)."""
        with urllib.request.urlopen(f"{self.alertmanager_url}/api/v2/alerts", timeout=10) as resp:
            return list(json.loads(resp.read()))

    def panel_queries(self, namespace: str, session: str) -> list[tuple[str, str]]:
        """(panel title, query) for every dashboard target, Grafana's variables set to one session."""
        return [(panel["title"], t["expr"].replace("$namespace", namespace).replace("$session", session))
                for panel in self.board["panels"] for t in panel["targets"]]

    def named_metrics(self) -> set[str]:
        """Every metric a rule or a dashboard query names."""
        exprs = [r["expr"] for g in self.groups for r in g["rules"]]
        exprs += [t["expr"] for p in self.board["panels"] for t in p["targets"]]
        return set().union(*(re.findall(r"\b(?:trading|process)_[a-z_]+", e) for e in exprs))
