"""Invalid Backups are refused by the API server itself (the generated CRD's schema and CEL), naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.backup.conftest import Cluster
from tests.fixtures.api import G, V

pytestmark = pytest.mark.cluster

BASE: dict[str, Any] = {"sessionRef": {"name": "s"}, "destination": {"pvc": {"claimName": "backups"}}}
S3: dict[str, Any] = {"bucket": "trading-backups", "credentialsSecretRef": {"name": "s3-keys"}}

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("bad-cron", {"schedule": "every hour please"}, "spec.schedule"),
    ("six-field-cron", {"schedule": "0 0 * * * *"}, "spec.schedule"),
    ("cron-with-seconds-macro", {"schedule": "@every 5m"}, "spec.schedule"),
    ("negative-keeplast", {"retention": {"keepLast": -1}}, "spec.retention.keepLast"),
    ("zero-keeplast", {"retention": {"keepLast": 0}}, "spec.retention.keepLast"),
    ("negative-maxage", {"retention": {"maxAge": "-7d"}}, "spec.retention.maxAge"),
    ("maxage-words", {"retention": {"maxAge": "7 days"}}, "spec.retention.maxAge"),
    ("unknown-target", {"targets": ["journal", "mongodb"]}, "spec.targets[1]"),
    ("duplicate-target", {"targets": ["journal", "journal"]}, "spec.targets[1]"),
    ("no-targets", {"targets": []}, "spec.targets"),
    ("suspend-one-shot", {"suspend": True}, "spec.suspend"),
    ("relative-path", {"destination": {"pvc": {"claimName": "backups", "path": "x/y"}}}, "spec.destination.pvc.path"),
    ("bad-claim", {"destination": {"pvc": {"claimName": "Backups!"}}}, "spec.destination.pvc.claimName"),
    ("verify-string", {"verify": "yes"}, "spec.verify"),
    ("both-destinations", {"destination": {"pvc": {"claimName": "backups"}, "s3": S3}}, "spec.destination"),
    ("no-destination", {"destination": {}}, "spec.destination"),
    ("s3-bad-bucket", {"destination": {"s3": {**S3, "bucket": "Bad_Bucket"}}}, "spec.destination.s3.bucket"),
    ("s3-no-keys", {"destination": {"s3": {"bucket": "bkt"}}}, "spec.destination.s3.credentialsSecretRef"),
    ("s3-leading-slash", {"destination": {"s3": {**S3, "prefix": "/demo"}}}, "spec.destination.s3.prefix"),
    ("s3-dot-dot", {"destination": {"s3": {**S3, "prefix": "demo/../other"}}}, "spec.destination.s3.prefix"),
    ("s3-endpoint-no-scheme", {"destination": {"s3": {**S3, "endpoint": "s3.local:7070"}}},
     "spec.destination.s3.endpoint"),
    ("time-zone-words", {"schedule": "0 2 * * *", "timeZone": "New York"}, "spec.timeZone"),
]


@pytest.mark.parametrize(("case", "spec", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_backup_is_refused_naming_the_field(cluster: Cluster, case: str, spec: dict[str, Any],
                                                    field: str) -> None:
    body = {"apiVersion": f"{G}/{V}", "kind": "Backup", "metadata": {"name": case}, "spec": {**BASE, **spec}}
    with pytest.raises(ApiException) as err:
        cluster.custom.create_namespaced_custom_object(G, V, cluster.namespace, "backups", body)
    assert err.value.status == 422, err.value.body
    assert field in str(err.value.body), err.value.body


def test_the_valid_neighbours_are_accepted(cluster: Cluster) -> None:
    specs: list[dict[str, Any]] = [{"schedule": "*/15 9-17 * * MON-FRI"}, {"schedule": "@hourly", "suspend": True},
                                   {"retention": {"keepLast": 1, "maxAge": "3d12h"}}, {"targets": ["journal"]},
                                   {"schedule": "0 2 * * *", "timeZone": "America/New_York",
                                    "destination": {"s3": {**S3, "prefix": "demo/journal.v2",
                                                           "endpoint": "http://trading-s3.trading:7070"}}}]
    for i, spec in enumerate(specs):
        body = {"apiVersion": f"{G}/{V}", "kind": "Backup", "metadata": {"name": f"ok{i}"}, "spec": {**BASE, **spec}}
        cluster.custom.create_namespaced_custom_object(G, V, cluster.namespace, "backups", body)
    got = cluster.get("backups", "ok3")["spec"]
    assert got["verify"] is True and got["retention"] == {"keepLast": 7} and got["suspend"] is False


def test_run_results_cannot_be_written_with_an_unknown_phase(cluster: Cluster) -> None:
    cluster.custom.create_namespaced_custom_object(G, V, cluster.namespace, "backups", {
        "apiVersion": f"{G}/{V}", "kind": "Backup", "metadata": {"name": "b"}, "spec": BASE})
    with pytest.raises(ApiException) as err:
        cluster.patch_status("backups", "b", {"phase": "Done"})
    assert err.value.status == 422 and "status.phase" in str(err.value.body)
    with pytest.raises(ApiException) as err:
        cluster.patch_status("backups", "b", {"history": [{"id": "r", "phase": "Exploded"}]})
    assert err.value.status == 422 and "status.history[0].phase" in str(err.value.body)
