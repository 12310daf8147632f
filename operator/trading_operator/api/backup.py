"""Backup: scheduled, retained, verified backups of a session's data.

Targets follow the runbooks: the trade journal (PostgreSQL), Redis, model
artifacts, and the resources themselves. The operator turns a Backup into
a Job (one-shot) or CronJob (``schedule``) that runs the workers' backup
command; that command writes a manifest with sizes and sha256 of every
artifact and reports into this object's status.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

import pydantic

from trading_operator.api import common
from trading_operator.api.common import ApiModel, cel, object_default, rules

# Five-field cron (minute hour day-of-month month day-of-week) or a macro.
_CRON_FIELD = r"(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[0-9]{1,2})?(,(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[0-9]{1,2})?)*"
_CRON_DOW = r"(\*|[0-7A-Za-z]{1,3}(-[0-7A-Za-z]{1,3})?)(/[0-9])?(,(\*|[0-7A-Za-z]{1,3}(-[0-7A-Za-z]{1,3})?))*"
_CRON_MON = r"(\*|[0-9A-Za-z]{1,3}(-[0-9A-Za-z]{1,3})?)(/[0-9]{1,2})?(,(\*|[0-9A-Za-z]{1,3}(-[0-9A-Za-z]{1,3})?))*"
CRON_PATTERN = (rf"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
                rf"{_CRON_FIELD} {_CRON_FIELD} {_CRON_FIELD} {_CRON_MON} {_CRON_DOW})$")
DURATION_PATTERN = r"^([0-9]+(s|m|h|d))+$"
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"

Target = Literal["journal", "redis", "models", "resources"]
TARGETS: tuple[Target, ...] = ("journal", "redis", "models", "resources")

# The contract between the operator's Job and the workers' `trading-platform backup run`.
ENV_BACKUP_ROOT = "TRADING_BACKUP_ROOT"          # directory that holds <backup-name>/<run-id>/
ENV_BACKUP_LOCATION = "TRADING_BACKUP_LOCATION"  # how that directory is named in status (pvc://claim/path)
ENV_BACKUP_URI = "TRADING_BACKUP_URI"            # an S3 destination instead: s3://bucket/prefix holding <backup-name>/<run-id>/
HISTORY_LIMIT = 20                               # runs kept in status.history (the files follow retention)

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> dt.timedelta:
    """``7d``, ``168h``, ``3d12h`` -> timedelta (the grammar of ``Retention.maxAge``)."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"not a duration: {value!r} (e.g. 7d, 168h, 3d12h)")
    return dt.timedelta(seconds=sum(int(n) * _DURATION_UNITS[u] for n, u in re.findall(r"([0-9]+)([smhd])", value)))


class Retention(ApiModel):
    """Which backups to keep. The newest good backup is never pruned."""

    keep_last: int = pydantic.Field(default=7, ge=1, le=10_000, description="Keep at least the newest N backups.")
    max_age: str | None = pydantic.Field(
        default=None, pattern=DURATION_PATTERN, max_length=32,
        description="Prune backups older than this (e.g. 168h, 7d, 3d12h), beyond keepLast.")


class PvcDestination(ApiModel):
    claim_name: str = pydantic.Field(min_length=1, max_length=253,
                                     pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                     description="PersistentVolumeClaim in the Backup's namespace.")
    path: str = pydantic.Field(default="/", max_length=1024, pattern=r"^/[^\x00]*$",
                               description="Directory inside the volume (absolute).")


class S3Destination(common.S3Access):
    """A bucket (and a prefix in it) of an S3-compatible object store."""

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("!self.prefix.matches('(^|/)[.][.]?(/|$)')", "prefix must not contain . or .. segments",
            field_path=".prefix", reason="FieldValueInvalid"),
    ))

    bucket: str = pydantic.Field(pattern=common.S3_BUCKET_PATTERN, min_length=3, max_length=63,
                                 description="Bucket that holds <prefix>/<backup name>/<run id>/ (it must exist).")
    prefix: str = pydantic.Field(
        default="", max_length=512, pattern=common.S3_PREFIX_PATTERN,
        description="Key prefix inside the bucket, without leading or trailing slash (e.g. demo/journal).")


class Destination(ApiModel):
    """Where artifacts are written: a PVC path or an S3-compatible bucket (exactly one)."""

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("has(self.pvc) != has(self.s3)", "set exactly one of pvc and s3", reason="FieldValueInvalid"),
    ))

    pvc: PvcDestination | None = pydantic.Field(default=None, description="Volume to write to (mounted at /backups).")
    s3: S3Destination | None = pydantic.Field(
        default=None,
        description="Bucket to write to. The run is written and verified in the pod's scratch space, then "
                    "uploaded (manifest last) and every uploaded object's sha256 is checked against the manifest.")


class BackupSpec(ApiModel):
    """What to back up, when, where, for how long, and whether to verify."""

    model_config = pydantic.ConfigDict(json_schema_extra=rules(
        cel("!self.suspend || has(self.schedule)", "suspend only applies to a scheduled Backup",
            field_path=".suspend", reason="FieldValueForbidden"),
    ))

    session_ref: common.LocalObjectRef = pydantic.Field(
        description="TradingSession whose journal, Redis streams and models are backed up.")
    targets: list[Target] = pydantic.Field(
        default_factory=lambda: ["journal", "redis", "models", "resources"],  # type: ignore[arg-type]
        min_length=1, max_length=4,
        description="journal (PostgreSQL), redis (RDB snapshot), models (artifacts), resources (session+policy YAML).",
        json_schema_extra={"x-kubernetes-list-type": "set",
                           "default": ["journal", "redis", "models", "resources"]})
    schedule: str | None = pydantic.Field(
        default=None, pattern=CRON_PATTERN, max_length=128,
        description="Cron schedule (e.g. '0 * * * *' hourly). Without it the Backup runs once.")
    time_zone: str = pydantic.Field(
        default="Etc/UTC", min_length=1, max_length=64, pattern=TIME_ZONE_PATTERN,
        description="IANA time zone `schedule` is read in (the CronJob's timeZone), e.g. America/New_York: "
                    "'0 2 * * *' then runs at 02:00 New York time in summer and in winter. An unknown zone "
                    "makes Ready False (InvalidSchedule) and no CronJob is created.")
    suspend: bool = pydantic.Field(default=False, description="Pause a scheduled Backup.")
    retention: Retention = pydantic.Field(default_factory=Retention, json_schema_extra=object_default(Retention),
                                          description="How many backups, and how old, to keep.")
    destination: Destination = pydantic.Field(description="Where artifacts go.")
    verify: bool = pydantic.Field(
        default=True, description="Restore the journal into a scratch database and compare row counts and checksums.")


class BackupRun(ApiModel):
    """One run of the backup."""

    id: str = pydantic.Field(max_length=64, description="Run id (also the directory name).")
    phase: Literal["Pending", "Running", "Completed", "Failed", "Pruned"] = pydantic.Field(description="Outcome.")
    started_at: dt.datetime | None = pydantic.Field(default=None, description="Start time.")
    completed_at: dt.datetime | None = pydantic.Field(default=None, description="End time.")
    size_bytes: int | None = pydantic.Field(default=None, ge=0, description="Total bytes of the artifacts.")
    sha256: str | None = pydantic.Field(default=None, max_length=64, description="sha256 of the manifest.")
    location: str | None = pydantic.Field(default=None, max_length=2048, description="Where the run's artifacts are.")
    verified: bool | None = pydantic.Field(default=None, description="Whether verification passed.")
    message: str | None = pydantic.Field(default=None, max_length=4096, description="Detail (e.g. failed artifact).")


class BackupStatus(ApiModel):
    phase: Literal["Pending", "Running", "Completed", "Failed"] | None = pydantic.Field(
        default=None, description="Phase of the latest run.")
    observed_generation: int | None = pydantic.Field(default=None, ge=0, description="Generation last reconciled.")
    conditions: list[common.Condition] = pydantic.Field(
        default_factory=list, max_length=16, description="Ready, Verified, ...",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    size_bytes: int | None = pydantic.Field(default=None, ge=0, description="Size of the latest run.")
    sha256: str | None = pydantic.Field(default=None, max_length=64, description="Manifest sha256 of the latest run.")
    location: str | None = pydantic.Field(default=None, max_length=2048, description="Latest run's location.")
    verified: bool | None = pydantic.Field(default=None, description="Latest run verified.")
    duration_seconds: float | None = pydantic.Field(default=None, ge=0, description="Latest run's duration.")
    last_successful_time: dt.datetime | None = pydantic.Field(default=None, description="Last Completed run.")
    last_verified_time: dt.datetime | None = pydantic.Field(default=None, description="Last verified run.")
    next_schedule_time: dt.datetime | None = pydantic.Field(default=None, description="Next scheduled run.")
    history: list[BackupRun] = pydantic.Field(default_factory=list, max_length=100,
                                              description="Recent runs, newest last.")


class Backup(ApiModel):
    """A backup of a session's journal, Redis, models and resources."""

    model_config = pydantic.ConfigDict(extra="ignore")

    api_version: str = common.API_VERSION
    kind: str = "Backup"
    metadata: common.ObjectMeta = pydantic.Field(default_factory=common.ObjectMeta)
    spec: BackupSpec
    status: BackupStatus = pydantic.Field(default_factory=BackupStatus)


