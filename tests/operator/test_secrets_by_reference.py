"""Secrets only by reference: every object the operator builds, rendered with every credential present.

A session with broker keys, an operator whose bus and journal need passwords, a one-shot and a
scheduled Backup: nothing in any rendered manifest may carry secret material. Credentials appear
only as ``secretKeyRef`` env; a URL with a password anywhere in a manifest fails the test; and the
operator refuses to start with a password in ``TRADING_JOURNAL_DSN`` / ``TRADING_REDIS_URL``
without echoing it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from trading_operator.api import workerconfig as wc
from trading_operator.api.backup import Backup
from trading_operator.api.session import TradingSession
from trading_operator.build import backup as build_backup
from trading_operator.build import rbac as build_rbac
from trading_operator.build import workers as build_workers
from trading_operator.settings import Settings

PASSWORD = "s3cr3t-Pa55word"  # a password that must never reach a manifest
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^@\s/]+@", re.IGNORECASE)
SECRET_ENV = {wc.ENV_REDIS_URL, wc.ENV_JOURNAL_DSN, wc.ENV_BROKER_KEY_ID, wc.ENV_BROKER_SECRET}

SETTINGS = Settings(journal_dsn="postgresql://trading@db:5432/trading", journal_dsn_secret_name="trading-journal",
                    redis_url="redis://bus:6379/0", redis_url_secret_name="trading-redis")


def session() -> TradingSession:
    return TradingSession.model_validate({
        "metadata": {"name": "live", "namespace": "desk", "uid": "u1"},
        "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"},
                 "broker": {"kind": "alpaca", "paper": True, "credentialsSecretRef": {"name": "alpaca-keys"}},
                 "strategy": {"name": "model", "model": {"uri": "pvc://models/m.pt", "device": "cpu"}}}})


def backups() -> list[Backup]:
    base = {"sessionRef": {"name": "live"}, "targets": ["journal", "redis", "models", "resources"],
            "destination": {"pvc": {"claimName": "backups", "path": "/desk"}}}
    return [Backup.model_validate({"metadata": {"name": name, "namespace": "desk", "uid": "b1"},
                                   "spec": {**base, **extra}})
            for name, extra in (("once", {}), ("nightly", {"schedule": "0 2 * * *"}))]


def everything(settings: Settings) -> list[dict[str, Any]]:
    """Every object the operator builds for a session and its backups."""
    ts = session()
    objects = [*build_rbac.all_objects(ts), build_workers.config_map(ts), *build_workers.all_deployments(ts, settings)]
    objects += [build_backup.desired(b, settings, model_uri="pvc://models/m.pt") for b in backups()]
    return objects


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj.get("spec") or {}
    template = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get("template") or {}
    yield from (template.get("spec") or {}).get("containers", [])


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif value is not None:
        yield str(value)


def test_every_built_object_carries_credentials_by_reference_only() -> None:
    objects = everything(SETTINGS)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ConfigMap", "CronJob", *["Deployment"] * 5, "Job", "Role", "RoleBinding", "ServiceAccount"], kinds
    referenced: dict[str, set[str]] = {}
    for obj in objects:
        for text in strings(obj):
            assert not URL_WITH_PASSWORD.search(text), f"{obj['kind']} {obj['metadata']['name']}: {text}"
        for container in containers(obj):
            for item in container.get("env", []):
                if item["name"] in SECRET_ENV:
                    assert "value" not in item, f"{obj['metadata']['name']}: {item['name']} is a plain value"
                    ref = item["valueFrom"]["secretKeyRef"]
                    referenced.setdefault(item["name"], set()).add(ref["name"])
            assert "args" not in container or not any(URL_WITH_PASSWORD.search(a) for a in container["args"])
    assert referenced == {wc.ENV_REDIS_URL: {"trading-redis"}, wc.ENV_JOURNAL_DSN: {"trading-journal"},
                          wc.ENV_BROKER_KEY_ID: {"alpaca-keys"}, wc.ENV_BROKER_SECRET: {"alpaca-keys"}}


def test_without_secrets_the_urls_are_plain_and_carry_no_password() -> None:
    plain = Settings(journal_dsn="postgresql://trading@db:5432/trading", redis_url="redis://bus:6379/0")
    for obj in everything(plain):
        for container in containers(obj):
            env = {e["name"]: e for e in container.get("env", [])}
            assert env[wc.ENV_JOURNAL_DSN] == {"name": wc.ENV_JOURNAL_DSN, "value": plain.journal_dsn}
            assert env[wc.ENV_REDIS_URL] == {"name": wc.ENV_REDIS_URL, "value": plain.redis_url}


@pytest.mark.parametrize("field", ["journal_dsn", "redis_url"])
def test_a_password_in_the_operator_settings_is_refused_without_echoing_it(field: str) -> None:
    url = {"journal_dsn": f"postgresql://trading:{PASSWORD}@db:5432/trading",
           "redis_url": f"redis://:{PASSWORD}@bus:6379/0"}[field]
    with pytest.raises(pydantic.ValidationError) as info:
        Settings(**{field: url})
    text = str(info.value) + json.dumps(info.value.errors(include_input=False, include_context=False), default=str)
    assert "carries a password" in text and f"TRADING_{field.upper()}_SECRET_NAME" in text
    assert PASSWORD not in text


def test_object_store_keys_reach_model_and_backup_pods_by_reference_only() -> None:
    s3 = {"endpoint": "http://trading-s3.trading:7070", "credentialsSecretRef": {"name": "s3-keys"}}
    ts = TradingSession.model_validate({
        "metadata": {"name": "live", "namespace": "desk", "uid": "u1"},
        "spec": {"symbols": ["AAPL"], "riskPolicyRef": {"name": "p"},
                 "strategy": {"name": "model", "model": {"uri": "s3://models/price-mlp/v1", "device": "cpu",
                                                         "s3": s3}}}})
    backup = Backup.model_validate({"metadata": {"name": "nightly", "namespace": "desk", "uid": "b1"}, "spec": {
        "sessionRef": {"name": "live"}, "schedule": "0 2 * * *",
        "destination": {"s3": {"bucket": "trading-backups", "prefix": "desk", **s3,
                               "credentialsSecretRef": {"name": "backup-keys", "accessKeyIdKey": "id",
                                                        "secretAccessKeyKey": "secret"}}}}})
    objects = [*build_workers.all_deployments(ts, SETTINGS), build_backup.desired(backup, SETTINGS)]
    refs: dict[str, set[tuple[str, str]]] = {}
    for obj in objects:
        for container in containers(obj):
            for item in container.get("env", []):
                if item["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    assert "value" not in item, f"{obj['metadata']['name']}: {item['name']} is a plain value"
                    ref = item["valueFrom"]["secretKeyRef"]
                    refs.setdefault(obj["metadata"]["name"], set()).add((ref["name"], ref["key"]))
    assert refs == {"live-inference": {("s3-keys", "AWS_ACCESS_KEY_ID"), ("s3-keys", "AWS_SECRET_ACCESS_KEY")},
                    "nightly-backup": {("backup-keys", "id"), ("backup-keys", "secret")}}
