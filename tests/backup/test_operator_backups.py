"""The operator (run as a subprocess) against the real API server: Backups become Jobs and CronJobs.

There is no kube-controller-manager here, so CronJobs never fire and Jobs
never run: the tests check the objects the operator writes, and stand in
for the Job's pod by running the backup command themselves.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes import config as kconfig

from tests.backup.conftest import Cluster, seed_journal
from tests.fixtures.waiting import eventually_sync
from trading_operator import names

pytestmark = pytest.mark.cluster


@pytest.fixture
def batch(control_plane: Any) -> Any:
    """The typed client's Optional fields make every attribute access a None check; tests treat it as Any."""
    return client.BatchV1Api(kconfig.new_client_from_config(str(control_plane.kubeconfig_path)))


def ready(cluster: Cluster, name: str) -> dict[str, Any]:
    return next((c for c in cluster.status(name).get("conditions", []) if c["type"] == "Ready"), {})


def assert_restricted_backup_pod(pod: Any, ns: str, backup: str, claim: str) -> None:
    container = pod.containers[0]
    assert container.command[-4:] == ["backup", "run", "--backup", f"{ns}/{backup}"]
    sc = container.security_context
    assert pod.security_context.run_as_non_root and sc.run_as_non_root and sc.read_only_root_filesystem
    assert sc.allow_privilege_escalation is False and sc.capabilities.drop == ["ALL"]
    assert sc.seccomp_profile.type == "RuntimeDefault" and pod.security_context.seccomp_profile.type == "RuntimeDefault"
    assert pod.restart_policy == "Never"
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["backups"].persistent_volume_claim.claim_name == claim
    assert {m.name: m.mount_path for m in container.volume_mounts}["backups"] == "/backups"
    env = {e.name: e.value for e in container.env}
    assert env["TRADING_BACKUP_ROOT"].startswith("/backups") and env["TRADING_JOURNAL_DSN"] and env["TRADING_REDIS_URL"]


def test_a_scheduled_backup_creates_a_cronjob_with_the_schedule_and_suspend_is_honoured(
        operator: Any, cluster: Cluster, batch: Any) -> None:
    ns = cluster.namespace
    cluster.session(phases=())
    cluster.backup("hourly", schedule="0 * * * *", retention={"keepLast": 1, "maxAge": "7d"},
                   destination={"pvc": {"claimName": "trading-backups", "path": "/journal"}})
    cron_name = names.backup_cronjob("hourly")
    cron = eventually_sync(lambda: batch.read_namespaced_cron_job(cron_name, ns), what="the CronJob")
    assert cron.spec.schedule == "0 * * * *" and cron.spec.suspend is False
    assert cron.spec.time_zone == "Etc/UTC" and cron.spec.concurrency_policy == "Forbid"
    uid = cluster.get("backups", "hourly")["metadata"]["uid"]
    owner = cron.metadata.owner_references[0]
    assert (owner.kind, owner.uid, owner.controller) == ("Backup", uid, True)
    assert cron.metadata.labels[names.LABEL_BACKUP] == "hourly"
    pod = cron.spec.job_template.spec.template.spec
    assert_restricted_backup_pod(pod, ns, "hourly", "trading-backups")
    env = {e.name: e.value for e in pod.containers[0].env}
    assert env["TRADING_BACKUP_ROOT"] == "/backups/journal" and env["TRADING_BACKUP_LOCATION"] == "pvc://trading-backups/journal"

    status = eventually_sync(lambda: (s := cluster.status("hourly")).get("nextScheduleTime") and s, what="nextScheduleTime")
    assert status["phase"] == "Pending" and status["observedGeneration"] == 1
    nxt = dt.datetime.fromisoformat(status["nextScheduleTime"].replace("Z", "+00:00"))
    now = dt.datetime.now(dt.UTC)
    assert nxt.minute == 0 and nxt.second == 0 and dt.timedelta(0) < nxt - now <= dt.timedelta(hours=1)
    assert ready(cluster, "hourly")["reason"] == "Scheduled"

    cluster.patch("backups", "hourly", {"spec": {"suspend": True}})
    eventually_sync(lambda: batch.read_namespaced_cron_job(cron_name, ns).spec.suspend is True, what="suspended CronJob")
    eventually_sync(lambda: ready(cluster, "hourly").get("reason") == "Suspended", what="Ready=Suspended")
    status = cluster.status("hourly")
    assert "nextScheduleTime" not in status and status["observedGeneration"] == 2

    cluster.patch("backups", "hourly", {"spec": {"suspend": False, "schedule": "*/5 * * * *"}})
    eventually_sync(lambda: (c := batch.read_namespaced_cron_job(cron_name, ns).spec).suspend is False
                    and c.schedule == "*/5 * * * *", what="resumed, rescheduled CronJob")
    status = eventually_sync(lambda: (s := cluster.status("hourly")).get("nextScheduleTime") and s.get(
        "observedGeneration") == 3 and s, what="a new nextScheduleTime")
    nxt = dt.datetime.fromisoformat(status["nextScheduleTime"].replace("Z", "+00:00"))
    assert nxt.minute % 5 == 0 and nxt - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=5)
    eventually_sync(lambda: {"CronJobCreated", "CronJobUpdated", "Suspended", "Scheduled"} <= set(cluster.events("hourly")),
                    what="the operator's Events")
    assert batch.list_namespaced_job(ns).items == []  # a schedule never runs a one-shot Job


async def test_a_one_shot_backup_runs_one_job_and_the_run_reports_into_status(
        operator: Any, cluster: Cluster, batch: Any, backup_cli: Callable[..., subprocess.CompletedProcess[str]],
        journal_db: str) -> None:
    ns = cluster.namespace
    session = cluster.session(phases=())
    await seed_journal(journal_db, session, orders=100)
    cluster.backup("once", targets=["journal", "resources"])
    job_name = names.backup_job("once")
    job = eventually_sync(lambda: batch.read_namespaced_job(job_name, ns), what="the Job")
    assert_restricted_backup_pod(job.spec.template.spec, ns, "once", "backups")
    assert job.metadata.owner_references[0].kind == "Backup"
    eventually_sync(lambda: cluster.status("once").get("phase") == "Pending", what="Pending")
    assert ready(cluster, "once")["reason"] == "JobCreated"

    # Stand in for the Job's pod.
    proc = backup_cli("run", "--backup", f"{ns}/once")
    assert proc.returncode == 0, proc.stderr[-4000:]
    eventually_sync(lambda: cluster.status("once").get("phase") == "Completed", what="Completed")
    time.sleep(2.0)  # the operator reconciles the status change; it must leave the run's results alone
    status = cluster.status("once")
    assert status["phase"] == "Completed" and status["verified"] is True and status["observedGeneration"] == 1
    assert [j.metadata.name for j in batch.list_namespaced_job(ns).items] == [job_name]

    # Scheduling it later swaps in a CronJob; unscheduling removes it (and never re-runs the one-shot).
    cluster.patch("backups", "once", {"spec": {"schedule": "@daily"}})
    eventually_sync(lambda: batch.read_namespaced_cron_job(names.backup_cronjob("once"), ns), what="the CronJob")
    cluster.patch("backups", "once", {"spec": {"schedule": None}})
    eventually_sync(lambda: not batch.list_namespaced_cron_job(ns).items, what="the CronJob gone")
    time.sleep(1.0)
    assert [j.metadata.name for j in batch.list_namespaced_job(ns).items] == [job_name]


def test_a_job_that_fails_before_the_run_reports_marks_the_backup_failed(
        operator: Any, cluster: Cluster, batch: Any) -> None:
    ns = cluster.namespace
    cluster.session(phases=())
    cluster.backup("doomed")
    job_name = names.backup_job("doomed")
    eventually_sync(lambda: batch.read_namespaced_job(job_name, ns), what="the Job")
    eventually_sync(lambda: cluster.status("doomed").get("phase") == "Pending", what="Pending")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = "Job has reached the specified backoff limit"
    batch.patch_namespaced_job_status(job_name, ns, {"status": {
        "startTime": now, "failed": 3, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": message,
             "lastTransitionTime": now, "lastProbeTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": message,
             "lastTransitionTime": now, "lastProbeTime": now}]}})
    status = eventually_sync(lambda: (s := cluster.status("doomed")).get("phase") == "Failed" and s, timeout=40,
                             what="Failed from the Job's condition (periodic reconcile)")
    assert "BackoffLimitExceeded" in status["history"][-1]["message"]
    eventually_sync(lambda: "BackupFailed" in cluster.events("doomed"), what="the BackupFailed Event")  # posted async


def test_a_schedule_the_api_accepts_but_cron_cannot_run_is_reported(operator: Any, cluster: Cluster,
                                                                      batch: Any) -> None:
    cluster.session(phases=())
    cluster.backup("odd", schedule="61 * * * *")  # the right shape for the schema, not a real minute
    cond = eventually_sync(lambda: (c := ready(cluster, "odd")).get("reason") == "InvalidSchedule" and c, what="InvalidSchedule")
    assert cond["status"] == "False" and "61 * * * *" in cond["message"]
    assert batch.list_namespaced_cron_job(cluster.namespace).items == []
    eventually_sync(lambda: "InvalidSchedule" in cluster.events("odd"), what="the InvalidSchedule Event")  # posted async
