"""Pure parts of backups: the Job/CronJob builder, the reconcile decision, retention, manifest checks, status rules."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import random
from typing import Any

import prometheus_client
import pytest

from trading_operator import names
from trading_operator.api.backup import Backup, BackupRun, BackupStatus, parse_duration
from trading_operator.build import backup as build
from trading_operator.reconcile import backup as rec
from trading_operator.settings import Settings
from trading_workers.backup import manifest as mf
from trading_workers.backup import retention
from trading_workers.backup import status as st
from trading_workers.backup.runner import trading_reason

NOW = dt.datetime(2026, 11, 23, 14, 7, 30, tzinfo=dt.UTC)
SETTINGS = Settings(worker_image="img:1", journal_dsn="postgresql://j@db/journal", redis_url="redis://r:6379/0")


def backup(name: str = "b", status: dict[str, Any] | None = None, **spec: Any) -> Backup:
    body = {"sessionRef": {"name": "s"}, "destination": {"pvc": {"claimName": "vol", "path": "/team/a/"}}}
    body.update(spec)
    return Backup.model_validate({"metadata": {"name": name, "namespace": "ns", "uid": "u1", "generation": 3},
                                  "spec": body, "status": status or {}})


# ------------------------------------------------------------------ build

def test_job_runs_the_backup_command_in_a_restricted_pod_with_the_pvc() -> None:
    job = build.job(backup(), SETTINGS)
    assert job["kind"] == "Job" and job["metadata"]["name"] == "b-backup"
    assert job["metadata"]["labels"][names.LABEL_BACKUP] == "b" and job["metadata"]["labels"][names.LABEL_SESSION] == "s"
    assert "ttlSecondsAfterFinished" not in job["spec"]
    pod = job["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["image"] == "img:1" and c["command"] == ["trading-platform", "backup", "run", "--backup", "ns/b"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["securityContext"]["runAsNonRoot"] and pod["restartPolicy"] == "Never"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["TRADING_BACKUP_ROOT"] == "/backups/team/a" and env["TRADING_BACKUP_LOCATION"] == "pvc://vol/team/a"
    assert env["TRADING_JOURNAL_DSN"] == SETTINGS.journal_dsn and env["TRADING_REDIS_URL"] == SETTINGS.redis_url
    assert {"name": "backups", "persistentVolumeClaim": {"claimName": "vol"}} in pod["volumes"]
    assert {"name": "backups", "mountPath": "/backups"} in c["volumeMounts"]
    assert "models" not in {v["name"] for v in pod["volumes"]}


def test_cronjob_carries_schedule_suspend_and_mounts_a_pvc_model() -> None:
    cron = build.cronjob(backup(schedule="0 */6 * * *", suspend=True), SETTINGS, model_uri="pvc://models/m/v3.pt")
    spec = cron["spec"]
    assert (spec["schedule"], spec["suspend"], spec["timeZone"], spec["concurrencyPolicy"]) == (
        "0 */6 * * *", True, "Etc/UTC", "Forbid")
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    assert {"name": "models", "mountPath": "/models/models", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert build.desired(backup(schedule="@daily"), SETTINGS)["kind"] == "CronJob"
    assert build.desired(backup(), SETTINGS)["kind"] == "Job"


def test_an_s3_destination_uploads_from_scratch_space_with_the_keys_by_reference() -> None:
    b = backup(schedule="0 2 * * *", timeZone="America/New_York", destination={"s3": {
        "bucket": "trading-backups", "prefix": "demo/journal", "endpoint": "http://s3.trading:7070",
        "credentialsSecretRef": {"name": "backup-keys"}}})
    cron = build.cronjob(b, SETTINGS)
    assert cron["spec"]["timeZone"] == "America/New_York"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["TRADING_BACKUP_URI"]["value"] == "s3://trading-backups/demo/journal"
    assert env["TRADING_BACKUP_LOCATION"]["value"] == "s3://trading-backups/demo/journal"
    assert env["TRADING_BACKUP_ROOT"]["value"].startswith("/tmp/")            # staging in the emptyDir
    assert env["TRADING_S3_ENDPOINT"]["value"] == "http://s3.trading:7070"
    assert env["AWS_ACCESS_KEY_ID"] == {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
        "name": "backup-keys", "key": "AWS_ACCESS_KEY_ID"}}}
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]                       # no PVC


def test_next_schedule_time_follows_the_time_zone_across_daylight_saving() -> None:
    summer = rec.next_run("0 2 * * *", dt.datetime(2026, 7, 1, 0, 0, tzinfo=dt.UTC), "America/New_York")
    winter = rec.next_run("0 2 * * *", dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC), "America/New_York")
    assert summer == dt.datetime(2026, 7, 1, 6, 0, tzinfo=dt.UTC)          # 02:00 EDT
    assert winter == dt.datetime(2026, 12, 1, 7, 0, tzinfo=dt.UTC)         # 02:00 EST
    assert rec.next_run("0 2 * * *", dt.datetime(2026, 7, 1, 0, 0, tzinfo=dt.UTC)) == \
        dt.datetime(2026, 7, 1, 2, 0, tzinfo=dt.UTC)                         # default Etc/UTC
    decision = rec.decide(rec.Observed(backup(schedule="0 2 * * *", timeZone="America/New_York"), [], None, None, NOW),
                          SETTINGS)
    assert decision.status.next_schedule_time == dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)
    ready = next(c for c in decision.status.conditions if c.type == "Ready")
    assert "America/New_York" in ready.message


def test_an_unknown_time_zone_creates_no_cronjob_and_says_why() -> None:
    decision = rec.decide(rec.Observed(backup(schedule="0 2 * * *", timeZone="Mars/Olympus_Mons"), [], None, None,
                                       NOW), SETTINGS)
    assert decision.apply is None and decision.status.next_schedule_time is None
    ready = next(c for c in decision.status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "InvalidSchedule" and "Mars/Olympus_Mons" in ready.message


def test_child_names_fit_the_kubernetes_limits() -> None:
    long = "x" * 250
    assert len(names.backup_job(long)) <= 63 and len(names.backup_cronjob(long)) <= 52
    assert names.backup_cronjob("a" * 45 + "-bbbbbbbbbbbb")[-1] != "-"


# ------------------------------------------------------------------ decide

def test_one_shot_creates_its_job_once_and_starts_pending() -> None:
    d = rec.decide(rec.Observed(backup(), [], None, None, NOW), SETTINGS)
    assert d.apply is not None and d.apply["kind"] == "Job"
    assert d.status.phase == "Pending" and d.status.observed_generation == 3 and d.status.next_schedule_time is None
    ran = backup(status={"phase": "Completed", "history": [{"id": "r1", "phase": "Completed"}]})
    assert rec.decide(rec.Observed(ran, [], None, None, NOW), SETTINGS).apply is None  # the Job was GC'd: no re-run


def test_schedule_next_time_suspend_and_invalid_cron() -> None:
    d = rec.decide(rec.Observed(backup(schedule="0 * * * *"), [], None, None, NOW), SETTINGS)
    assert d.apply is not None and d.apply["kind"] == "CronJob"
    assert d.status.next_schedule_time == dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)
    assert rec.status_patch(BackupStatus(), d.status)["nextScheduleTime"] == "2026-11-23T15:00:00Z"

    live = dict(d.apply)
    same = rec.decide(rec.Observed(backup(schedule="0 * * * *"), [], live, None, NOW), SETTINGS)
    assert same.apply is None  # nothing drifted

    sus = rec.decide(rec.Observed(backup(schedule="0 * * * *", suspend=True), [], live, None, NOW), SETTINGS)
    assert sus.apply is not None and sus.apply["spec"]["suspend"] is True and sus.status.next_schedule_time is None
    assert [c.reason for c in sus.status.conditions] == ["Suspended"]
    old = d.status
    assert rec.status_patch(old, sus.status)["nextScheduleTime"] is None  # merge patch null removes it

    bad = rec.decide(rec.Observed(backup(schedule="61 * * * *"), [], None, None, NOW), SETTINGS)
    assert bad.apply is None and bad.status.conditions[0].reason == "InvalidSchedule"
    assert [e.reason for e in bad.events] == ["InvalidSchedule"]
    assert rec.next_run("@daily", NOW) == dt.datetime(2026, 11, 24, tzinfo=dt.UTC)


def test_a_job_left_by_an_earlier_backup_of_the_same_name_is_replaced_not_trusted() -> None:
    """A Backup deleted and re-created (an Argo CD PostSync hook) must run again, and not inherit old failures."""
    b = Backup.model_validate({"metadata": {"name": "b", "namespace": "ns", "uid": "new", "generation": 1,
                                            "creationTimestamp": "2026-11-23T14:05:00Z"},
                               "spec": {"sessionRef": {"name": "s"}, "destination": {"pvc": {"claimName": "v"}}}})
    old_job = {"metadata": {"name": "b-backup", "creationTimestamp": "2026-11-23T14:00:00Z",
                            "ownerReferences": [{"uid": "old"}]},
               "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    d = rec.decide(rec.Observed(b, [old_job], None, None, NOW), SETTINGS)
    assert d.delete == [("batch/v1", "jobs", "b-backup")] and d.apply is None
    assert d.status.phase == "Pending"
    d = rec.decide(rec.Observed(b, [], None, None, NOW), SETTINGS)  # once it is gone
    assert d.apply is not None and d.apply["kind"] == "Job"


def test_unscheduling_deletes_the_cronjob() -> None:
    cron = build.cronjob(backup(schedule="@hourly"), SETTINGS)
    d = rec.decide(rec.Observed(backup(status={"phase": "Completed"}), [], cron, None, NOW), SETTINGS)
    assert d.delete == [("batch/v1", "cronjobs", "b-backup")] and d.apply is None


def test_a_failed_job_fails_a_pending_or_running_backup_but_not_a_finished_one() -> None:
    failed = {"metadata": {"name": "b-backup", "creationTimestamp": "2026-11-23T14:00:00Z"}, "status": {
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "3 pods"}]}}
    running = backup(status={"phase": "Running", "history": [{"id": "r1", "phase": "Running"}]})
    d = rec.decide(rec.Observed(running, [failed], None, None, NOW), SETTINGS)
    assert d.status.phase == "Failed" and d.status.history[-1].phase == "Failed"
    assert "BackoffLimitExceeded" in (d.status.history[-1].message or "")
    assert [e.reason for e in d.events][-1] == "BackupFailed"
    done = backup(status={"phase": "Completed"})
    assert rec.decide(rec.Observed(done, [failed], None, None, NOW), SETTINGS).status.phase == "Completed"


def test_metrics_export_the_last_successful_and_verified_times() -> None:
    b = backup(name="metrics-b", status={"phase": "Completed", "lastSuccessfulTime": "2026-11-23T14:00:00Z",
                                         "lastVerifiedTime": "2026-11-23T14:00:05Z", "sizeBytes": 42})
    rec.export_metrics(b)
    sample = prometheus_client.REGISTRY.get_sample_value
    labels = {"namespace": "ns", "backup": "metrics-b"}
    assert sample("trading_backup_last_success_timestamp_seconds", labels) == NOW.replace(
        minute=0, second=0).timestamp()
    assert sample("trading_backup_last_verified_timestamp_seconds", labels) == NOW.replace(minute=0, second=5).timestamp()
    assert sample("trading_backup_size_bytes", labels) == 42 and sample("trading_backup_failed", labels) == 0
    rec.forget_metrics("ns", "metrics-b")
    assert sample("trading_backup_size_bytes", labels) is None


# ------------------------------------------------------------------ retention

def run(id_: str, hours_ago: float, good: bool = True) -> retention.RunInfo:
    return retention.RunInfo(id_, NOW - dt.timedelta(hours=hours_ago), good)


@pytest.mark.parametrize(("runs", "keep_last", "max_age", "pruned"), [
    # keepLast alone: the newest N good runs.
    ([run("a", 5), run("b", 4), run("c", 3), run("d", 2), run("e", 1)], 2, None, ["a", "b", "c"]),
    # failures do not count; one older than the newest good run goes, of newer ones the newest keepLast stay.
    ([run("a", 5), run("f1", 4, False), run("b", 3), run("f2", 2, False), run("f3", 1, False)], 1, None,
     ["a", "f1", "f2"]),
    ([run("a", 5), run("f1", 4, False), run("b", 3), run("f2", 2, False), run("f3", 1, False)], 2, None,
     ["f1"]),
    # maxAge keeps everything young enough, and keepLast keeps the newest good however old.
    ([run("a", 300), run("b", 200), run("c", 100), run("d", 30), run("e", 10)], 1, "3d", ["a", "b", "c"]),
    ([run("a", 300), run("b", 200), run("f", 10, False)], 1, "3d", ["a"]),
    # every run expired: the newest good one still stays.
    ([run("a", 900), run("b", 800), run("f", 700, False)], 1, "1d", ["a", "f"]),
    # no good run at all: the newest keepLast failures stay.
    ([run("f1", 3, False), run("f2", 2, False), run("f3", 1, False)], 2, None, ["f1"]),
])
def test_retention_plan(runs: list[retention.RunInfo], keep_last: int, max_age: str | None,
                        pruned: list[str]) -> None:
    assert retention.plan(runs, keep_last, parse_duration(max_age) if max_age else None, NOW) == pruned


def test_retention_never_prunes_the_newest_good_run_or_the_protected_one() -> None:
    rng = random.Random(7)
    for _ in range(500):
        runs = [run(f"r{i}", rng.uniform(0, 2000), rng.random() < 0.7) for i in range(rng.randint(1, 15))]
        keep_last = rng.randint(1, 4)
        max_age = rng.choice([None, dt.timedelta(hours=rng.uniform(1, 1000))])
        protect = rng.choice(runs).id
        pruned = retention.plan(runs, keep_last, max_age, NOW, protect=[protect])
        good = sorted((r for r in runs if r.good), key=lambda r: r.started_at)
        if good:
            assert good[-1].id not in pruned
            assert len([r for r in good if r.id not in pruned]) >= min(keep_last, len(good))
        assert protect not in pruned


def _fake_run(root: pathlib.Path, started: dt.datetime, status: str = "Completed", verify_ok: bool | None = None) -> str:
    run_id = mf.new_run_id(started, started.strftime("%H%M"))
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "a.bin").write_bytes(b"x" * 10)
    man = mf.Manifest(backup="ns/b", session="ns/s", run=run_id, started_at=started, completed_at=started,
                      status=status, artifacts=[mf.Artifact.of(run_dir, run_dir / "a.bin", "journal")])
    mf.write(run_dir, man)
    if verify_ok is not None:
        (run_dir / retention.VERIFY_RESULT).write_text(json.dumps({"ok": verify_ok}))
    return run_id


def test_retention_on_disk_hourly_with_seven_days(tmp_path: pathlib.Path) -> None:
    """The runbook's journal policy (hourly, 7 days) over ten days of runs, with failures and an unfinished run."""
    ids = {h: _fake_run(tmp_path, NOW - dt.timedelta(hours=h)) for h in range(0, 240, 12)}
    failed = _fake_run(tmp_path, NOW - dt.timedelta(hours=200, minutes=30), status="Failed")
    bad_verify = _fake_run(tmp_path, NOW - dt.timedelta(hours=6, minutes=1), verify_ok=False)
    unfinished = tmp_path / mf.new_run_id(NOW - dt.timedelta(hours=190), "dead")
    unfinished.mkdir()
    pruned = retention.apply(tmp_path, keep_last=1, max_age=parse_duration("7d"), now=NOW)
    expected = sorted([ids[h] for h in ids if h > 168] + [failed, unfinished.name])
    assert sorted(pruned) == expected
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([ids[h] for h in ids if h <= 168] + [bad_verify])
    assert retention.newest_good(tmp_path) == ids[0]


# ------------------------------------------------------------------ manifest

def test_manifest_check_names_every_kind_of_damage(tmp_path: pathlib.Path) -> None:
    run_id = _fake_run(tmp_path, NOW)
    run_dir = tmp_path / run_id
    assert mf.check(run_dir)[1] == []
    (run_dir / "a.bin").write_bytes(b"x" * 9 + b"y")
    assert [p.artifact for p in mf.check(run_dir)[1]] == ["a.bin"]
    (run_dir / "a.bin").write_bytes(b"x" * 11)
    assert "size 11 != 10" in str(mf.check(run_dir)[1][0])
    (run_dir / "a.bin").unlink()
    assert str(mf.check(run_dir)[1][0]) == "a.bin: missing"
    text = (run_dir / mf.MANIFEST).read_text().replace('"size": 10', '"size": 11')
    (run_dir / mf.MANIFEST).write_text(text)
    assert mf.check(run_dir)[1][0].artifact == mf.MANIFEST
    assert [p.artifact for p in mf.check(run_dir, expected_manifest_sha="0" * 64)[1]][:2] == [mf.MANIFEST] * 2


# ------------------------------------------------------------------ status rules

def test_finish_records_the_run_prunes_history_and_sets_the_latest_fields() -> None:
    status = BackupStatus.model_validate({"history": [{"id": "old", "phase": "Completed"}]})
    st.start(status, "new", NOW, "pvc://vol/b/new")
    assert status.phase == "Running" and status.history[-1].phase == "Running"
    done = BackupRun(id="new", phase="Completed", started_at=NOW, completed_at=NOW + dt.timedelta(seconds=12.5),
                     size_bytes=100, sha256="ab" * 32, location="pvc://vol/b/new", verified=True)
    st.finish(status, done, ["old"], True, 3)
    assert [(h.id, h.phase) for h in status.history] == [("old", "Pruned"), ("new", "Completed")]
    assert status.phase == "Completed" and status.verified is True and status.duration_seconds == 12.5
    assert status.last_successful_time == status.last_verified_time == done.completed_at
    assert {c.type: c.status for c in status.conditions} == {"Succeeded": "True", "Verified": "True"}

    st.record_verification(status, "new", False, "verification failed: journal/journal.dump: sha256 x != y", NOW, 3)
    assert status.phase == "Failed" and status.verified is False and status.history[-1].phase == "Failed"
    assert status.last_verified_time == done.completed_at  # a failed check never moves it
    for i in range(40):
        st.start(status, f"r{i}", NOW, "x")
    assert len(status.history) == 20
    assert st.merge_patch({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"c": 3, "b": None}


@pytest.mark.parametrize(("phase", "suspend", "refused"), [
    ("MarketOpen", False, True), ("AfterHours", False, True), ("PreMarket", False, True), (None, False, True),
    ("Halted", False, False), ("MarketOpen", True, False), ("Initializing", True, False)])
def test_restore_is_refused_while_trading(phase: str | None, suspend: bool, refused: bool) -> None:
    session = {"spec": {"suspend": suspend}, "status": {"phase": phase} if phase else {}}
    assert (trading_reason(session) is not None) is refused


def test_pg_tools_get_the_password_through_the_environment_not_the_command_line() -> None:
    from trading_workers.backup.postgres import with_database, without_password

    assert without_password("postgresql://u:p%40ss@db:5432/j?sslmode=require") == (
        "postgresql://u@db:5432/j?sslmode=require", {"PGPASSWORD": "p@ss"})
    assert without_password("postgresql://u@db/j") == ("postgresql://u@db/j", {})
    assert with_database("postgresql://u:pw@db:5432/j?sslmode=require", "tp_verify_1") == (
        "postgresql://u:pw@db:5432/tp_verify_1?sslmode=require")
