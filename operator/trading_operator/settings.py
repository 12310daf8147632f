"""Operator settings, read once from the environment (the Helm chart sets them).

Builders never read the environment: they receive a ``Settings`` object,
so they stay pure and testable with literal values.

Nothing secret lives here. The Redis URL and the journal DSN are copied into
every worker and backup pod, so they may carry no password: a URL with one is
refused at start-up (without echoing it). A password-protected bus or journal
is named by a Secret instead (``*_secret_name``), which must exist in every
session namespace; pods read it through ``secretKeyRef`` and the operator
never reads it.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any

import pydantic
import pydantic_settings

from trading_operator.api import workerconfig as wc


class Settings(pydantic_settings.BaseSettings):
    # hide_input_in_errors: a refused journal DSN must not print its password in the crash message.
    model_config = pydantic_settings.SettingsConfigDict(env_prefix="TRADING_", extra="ignore",
                                                        hide_input_in_errors=True)

    worker_image: str = pydantic.Field(default="ghcr.io/trading-platform/workers:0.1.0",
                                       description="Image of the worker Deployments.")
    worker_service_account: str = pydantic.Field(default="trading-worker",
                                                 description="ServiceAccount of backup pods (workers: build.rbac).")
    worker_command: list[str] = pydantic.Field(default_factory=lambda: ["trading-platform"],
                                               description="Entry point of the worker image.")
    gpu_node_selector: dict[str, str] = pydantic.Field(
        default_factory=lambda: {"trading.dev/pool": "gpu"}, description="GPU pool nodeSelector (JSON).")
    gpu_tolerations: list[dict[str, Any]] = pydantic.Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        description="Tolerations for the GPU pool (JSON).")
    gpu_resource: str = pydantic.Field(default="nvidia.com/gpu", description="Extended resource of a GPU.")
    redis_url: str = pydantic.Field(default="redis://trading-redis:6379/0", description="Bus for workers.")
    journal_dsn: str = pydantic.Field(default="postgresql://trading@trading-postgres:5432/trading",
                                      description="Trade journal DSN for workers, without a password.")
    journal_dsn_secret_name: str = pydantic.Field(
        default="", description="Secret (in every session namespace) whose key journal_dsn_secret_key holds the "
                                "journal DSN; set, it replaces journal_dsn in worker and backup pods.")
    journal_dsn_secret_key: str = "dsn"
    redis_url_secret_name: str = pydantic.Field(
        default="", description="Secret (in every session namespace) whose key redis_url_secret_key holds the "
                                "Redis URL; set, it replaces redis_url in worker and backup pods.")
    redis_url_secret_key: str = "url"
    worker_http_port: int = 8080
    reconcile_interval: float = pydantic.Field(
        default=2.0, gt=0, description="Seconds between reconciles of a session that waits on something no watch "
                                       "delivers soon (a halt, failing pre-market checks; 5x this for a live "
                                       "session, whose namespace label is read, not watched).")
    resync_seconds: float = pydantic.Field(
        default=300.0, gt=0, description="Longest a session goes without a reconcile when nothing wakes it: a "
                                         "backstop. Watch events, the calendar's next transition and the "
                                         "executor-heartbeat and risk-report deadlines wake it (decision 0015).")
    executor_stale_seconds: float = pydantic.Field(
        default=30.0, gt=0, description="An executor silent this long in a trading phase is 'lost' (halt).")
    delete_timeout_seconds: float = pydantic.Field(
        default=60.0, gt=0, description="How long deletion waits for executors to handle open orders.")
    lease_name: str = "trading-operator"
    lease_namespace: str = "default"
    leader_election: bool = True
    rotation_enabled: bool = pydantic.Field(
        default=True, description="Watch Secret metadata and roll the pods that read a rotated Secret (secretwatch); "
                                  "false: Secret versions are not tracked (the chart's rotation.enabled).")
    metrics_port: int = 8080
    liveness_port: int = 8081
    bind_address: str = pydantic.Field(
        default_factory=lambda: wc.bind_address(os.environ),
        description="Where /metrics and /healthz listen: every interface in a cluster, loopback outside one.")

    @pydantic.field_validator("journal_dsn", "redis_url")
    @classmethod
    def _no_password(cls, value: str, info: pydantic.ValidationInfo) -> str:
        if urllib.parse.urlsplit(value).password:
            secret = f"TRADING_{str(info.field_name).upper()}_SECRET_NAME"
            raise ValueError(f"TRADING_{str(info.field_name).upper()} carries a password; it would be copied into "
                             f"every worker pod. Put the URL in a Secret in each session namespace and name it in "
                             f"{secret}")
        return value

    @pydantic.field_validator("gpu_node_selector", "gpu_tolerations", "worker_command", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value
