"""A local process runtime: worker Deployments and backup Jobs as local processes, in seconds, no root.

It watches the Deployments the operator creates and runs each replica's
container command as a local process, with the pod's env (Secret
references resolved, the ConfigMap volume written to a directory, the HTTP
port made unique per process), restarts crashed processes with exponential
backoff, rolls processes when the pod template changes, and writes the
Deployments' status (replicas, ready) from each process's ``/readyz`` — so
the operator sees what it would see on a cluster. Jobs (the backups) run
their pod to completion, retried up to ``backoffLimit``, and get a Job
status with the conditions the Job controller would write. A
PersistentVolumeClaim is a directory shared by every process that mounts
it. CronJobs are not run (no schedule controller here): a scheduled
Backup's CronJob exists as an object only.

It is not a kubelet: scheduling and resources (the GPU pool), rollout
strategies, liveness and startup probes, CronJob schedules, garbage
collection, ServiceAccount tokens and Pod Security are not modelled, and
will not be. They are proven on the real node (``trading_dev.cluster``,
``make demo``'s default runtime); what this runtime keeps, and for whom:
docs/decisions/0016-the-process-runtime-after-the-real-node.md.

Dev tooling only: the operator and workers do not know it exists.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import pathlib
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from trading_dev import procs
from trading_dev.controlplane import server

LOG = logging.getLogger("trading_dev.runtime")
SELECTOR = "app.kubernetes.io/managed-by=trading-operator"
MAX_BACKOFF = 30.0


def _cond(type_: str, reason: str, now: str) -> dict[str, str]:
    return {"type": type_, "status": "True", "reason": reason, "message": "local process runtime",
            "lastTransitionTime": now, "lastProbeTime": now}


def template_hash(dep: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dep["spec"]["template"], sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Replica:
    """One 'pod': a local process for one replica of a Deployment."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: pathlib.Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    ready: bool = False

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.ready = False
        LOG.info("started %s (pid %s)", self.name, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_ready(self) -> bool:
        if not self.alive():
            self.ready = False
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as resp:
                self.ready = resp.status == 200
        except Exception:
            self.ready = False
        return self.ready

    def stop(self, grace: float = 10.0) -> None:
        procs.stop_group(self.proc, grace)


@dataclass
class Pods:
    """The replicas of one Deployment at one template hash."""

    key: tuple[str, str]
    template: str
    generation: int
    replicas: list[Replica] = field(default_factory=list)


@dataclass
class JobRun:
    """A Job's pods, run one after another until one succeeds or backoffLimit is spent."""

    key: tuple[str, str]
    uid: str
    backoff_limit: int
    started: str
    current: Replica | None = None
    failed: int = 0
    done: bool = False


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class LocalRuntime:
    def __init__(self, kubeconfig: pathlib.Path, workdir: pathlib.Path, interval: float = 0.5,
                 extra_env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.interval = interval
        self.extra_env = extra_env or {}
        api_client = config.new_client_from_config(str(kubeconfig))
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.pods: dict[tuple[str, str], Pods] = {}
        self.jobs: dict[tuple[str, str], JobRun] = {}
        self.batch = client.BatchV1Api(api_client)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalRuntime:
        self._thread = threading.Thread(target=self._loop, name="local-runtime", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for pods in self.pods.values():
            for replica in pods.replicas:
                replica.stop()
        self.pods.clear()
        for run in self.jobs.values():
            if run.current is not None:
                run.current.stop()
        self.jobs.clear()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:
                LOG.warning("sync failed: %s", exc)
            self._stop.wait(self.interval)

    # ------------------------------------------------------------------ sync

    def sync(self) -> None:
        self._sync_deployments()
        self._sync_jobs()

    def _sync_deployments(self) -> None:
        deps = self.apps.list_deployment_for_all_namespaces(label_selector=SELECTOR).items
        seen = set()
        for dep in deps:
            body = self.apps.api_client.sanitize_for_serialization(dep)
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            seen.add(key)
            self._sync_one(key, body)
        for key in [k for k in self.pods if k not in seen]:
            LOG.info("deployment %s/%s gone: stopping its processes", *key)
            for replica in self.pods.pop(key).replicas:
                replica.stop()

    def _sync_one(self, key: tuple[str, str], dep: dict[str, Any]) -> None:
        want = int(dep["spec"].get("replicas") or 0)
        thash = template_hash(dep)
        pods = self.pods.get(key)
        if pods is not None and pods.template != thash:
            LOG.info("template of %s/%s changed: rolling its processes", *key)
            for replica in pods.replicas:
                replica.stop()
            pods = None
        if pods is None:
            pods = self.pods[key] = Pods(key, thash, int(dep["metadata"].get("generation") or 0))
        pods.generation = int(dep["metadata"].get("generation") or 0)
        while len(pods.replicas) > want:
            pods.replicas.pop().stop()
        while len(pods.replicas) < want:
            pods.replicas.append(self._replica(dep, len(pods.replicas)))
        now = time.monotonic()
        for replica in pods.replicas:
            if replica.alive():
                replica.check_ready()
                continue
            if replica.proc is not None and replica.next_start == 0.0:
                replica.restarts += 1
                delay = min(MAX_BACKOFF, 2.0 ** min(replica.restarts, 5) / 2)
                replica.next_start = now + delay
                LOG.warning("%s exited with %s; restart %d in %.0fs", replica.name, replica.proc.returncode,
                            replica.restarts, delay)
            if now >= replica.next_start:
                replica.next_start = 0.0
                replica.start()
        self._write_status(key, dep, pods, want)

    def _sync_jobs(self) -> None:
        """Run each Job's pod to completion (retrying up to backoffLimit) and write the Job's status."""
        jobs = self.batch.list_job_for_all_namespaces(label_selector=SELECTOR).items
        seen = set()
        for job in jobs:
            body = self.batch.api_client.sanitize_for_serialization(job)
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            seen.add(key)
            status = body.get("status") or {}
            run = self.jobs.get(key)
            if run is None or run.uid != body["metadata"]["uid"]:
                if status.get("succeeded") or any(c.get("type") in ("Complete", "Failed")
                                                  for c in status.get("conditions") or []):
                    continue  # finished before we saw it
                run = self.jobs[key] = JobRun(key, body["metadata"]["uid"],
                                              int(body["spec"].get("backoffLimit", 6)), _now())
            if run.done:
                continue
            if run.current is None:
                run.current = self._process(key[0], key[1], body["spec"]["template"], run.failed)
                run.current.start()
                self._job_status(key, {"startTime": run.started, "active": 1})
                continue
            if run.current.alive():
                continue
            code = run.current.proc.returncode if run.current.proc else 1
            if code == 0:
                run.done = True
                now = _now()
                self._job_status(key, {"active": 0, "succeeded": 1, "failed": run.failed, "startTime": run.started,
                                       "completionTime": now, "conditions": [
                                           _cond("SuccessCriteriaMet", "CompletionsReached", now),
                                           _cond("Complete", "CompletionsReached", now)]})
            else:
                run.failed += 1
                run.current = None
                if run.failed > run.backoff_limit:
                    run.done = True
                    now = _now()
                    self._job_status(key, {"active": 0, "failed": run.failed, "startTime": run.started,
                                           "conditions": [_cond("FailureTarget", "BackoffLimitExceeded", now),
                                                          _cond("Failed", "BackoffLimitExceeded", now)]})
                else:
                    self._job_status(key, {"active": 0, "failed": run.failed, "startTime": run.started})
        for key in [k for k in self.jobs if k not in seen]:
            run = self.jobs.pop(key)
            if run.current is not None:
                run.current.stop()

    def _job_status(self, key: tuple[str, str], status: dict[str, Any]) -> None:
        try:
            self.batch.patch_namespaced_job_status(key[1], key[0], {"status": status})
        except ApiException as exc:
            LOG.warning("job %s/%s status not written: %s", key[0], key[1], exc.body)

    def _write_status(self, key: tuple[str, str], dep: dict[str, Any], pods: Pods, want: int) -> None:
        ready = sum(1 for r in pods.replicas if r.ready)
        running = sum(1 for r in pods.replicas if r.alive())
        status = {"observedGeneration": pods.generation, "replicas": running, "updatedReplicas": running,
                  "readyReplicas": ready, "availableReplicas": ready,
                  "unavailableReplicas": max(0, want - ready)}
        current = dep.get("status") or {}
        if all(current.get(k, 0) == v for k, v in status.items()):
            return
        body = {"status": {**status, "conditions": [{
            "type": "Available", "status": "True" if ready >= want else "False",
            "reason": "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable",
            "message": f"{ready}/{want} local processes ready"}]}}
        with contextlib.suppress(ApiException):
            self.apps.patch_namespaced_deployment_status(key[1], key[0], body)

    # ------------------------------------------------------------------ pods

    def _replica(self, dep: dict[str, Any], index: int) -> Replica:
        return self._process(dep["metadata"]["namespace"], dep["metadata"]["name"], dep["spec"]["template"],
                             index)

    def _process(self, ns: str, name: str, template: dict[str, Any], index: int) -> Replica:
        pod = template["spec"]
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        container = pod["containers"][0]
        pod_dir = self.workdir / "pods" / ns / f"{name}-{index}"
        mounts = self._volumes(ns, pod, container, pod_dir)
        port = server.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
        env.update(self.extra_env)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["HOSTNAME"] = f"{name}-{index}"
        http_port = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == "http"), None)
        for item in container.get("env", []):
            value = self._env_value(ns, item, annotations)
            for mount_path, local in mounts.items():  # paths inside a mounted volume -> the local directory
                if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                    value = str(local) + value[len(mount_path):]
                    break
            else:
                value = self._parent_of_mounts(value, mounts, pod_dir)
            if http_port is not None and value == str(http_port) and item["name"].endswith("PORT"):
                value = str(port)  # every process shares the loopback interface
            env[item["name"]] = value
        argv = list(container.get("command", [])) + list(container.get("args", []))
        return Replica(f"{ns}/{name}-{index}", argv, env, port, self.workdir / "logs" / f"{ns}.{name}-{index}.log")

    @staticmethod
    def _parent_of_mounts(value: str, mounts: dict[str, pathlib.Path], pod_dir: pathlib.Path) -> str:
        """A path above mounts (``/models`` when a claim is mounted at ``/models/CLAIM``, where the workers
        resolve ``pvc://CLAIM/...``): a local directory whose entries link to those mounts' directories."""
        if not value.startswith("/") or not value.strip("/"):
            return value
        children = {m[len(value.rstrip("/")) + 1:]: local for m, local in mounts.items()
                    if m.startswith(value.rstrip("/") + "/")}
        if not children:
            return value
        root = pod_dir / "above-mounts" / value.strip("/").replace("/", "_")
        for rel, local in children.items():
            link = root / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(local, target_is_directory=True)
        return str(root)

    def _volumes(self, ns: str, pod: dict[str, Any], container: dict[str, Any],
                 pod_dir: pathlib.Path) -> dict[str, pathlib.Path]:
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts: dict[str, pathlib.Path] = {}
        for mount in container.get("volumeMounts", []):
            local = pod_dir / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            volume = volumes.get(mount["name"], {})
            if "persistentVolumeClaim" in volume:
                # A claim is a directory shared by every process that mounts it.
                local = self.workdir / "volumes" / ns / volume["persistentVolumeClaim"]["claimName"]
                local.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                cm = self.core.read_namespaced_config_map(volume["configMap"]["name"], ns)
                for key, value in (cm.data or {}).items():
                    (local / key).write_text(value)
            mounts[mount["mountPath"]] = local
        return mounts

    def _env_value(self, ns: str, item: dict[str, Any], annotations: dict[str, str]) -> str:
        if "value" in item:
            return str(item["value"])
        field_path = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
        if field_path.startswith("metadata.annotations['") and field_path.endswith("']"):  # the Downward API
            return str(annotations.get(field_path[len("metadata.annotations['"):-2], ""))
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret = self.core.read_namespaced_secret(ref["name"], ns)
            return base64.b64decode((secret.data or {})[ref["key"]]).decode()
        return ""
