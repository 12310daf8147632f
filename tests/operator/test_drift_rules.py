"""The drift rules, on literal objects (no client): what makes a child be applied again."""

from __future__ import annotations

from typing import Any

from trading_operator import drift, names


def _live(manifest: dict[str, Any], managed: list[dict[str, Any]]) -> dict[str, Any]:
    stamped, _ = drift.stamp(manifest)
    return drift.trim({**stamped, "metadata": {**stamped["metadata"], "managedFields": managed},
                       "status": {"readyReplicas": 1}})


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"},
              "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}
OURS = {"manager": names.FIELD_MANAGER, "operation": "Apply", "time": "2026-12-01T10:00:00Z",
        "fieldsV1": {"f:spec": {}}}


def test_any_change_of_the_desired_object_is_drift() -> None:
    _, digest = drift.stamp(DEPLOYMENT)
    live = _live(DEPLOYMENT, [OURS])
    assert drift.drift_reason(digest, live) is None and live["status"]["readyReplicas"] == 1
    changed = {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "template": {"spec": {"containers": [
        {"name": "c", "image": "i", "resources": {"limits": {"cpu": "1"}}}]}}}}
    assert drift.drift_reason(drift.stamp(changed)[1], live) == "changed"
    assert drift.drift_reason(digest, None) == "missing"


def test_a_later_foreign_write_of_the_content_is_drift_status_and_metadata_are_not() -> None:
    _, digest = drift.stamp(DEPLOYMENT)
    edit = {"manager": "kubectl-edit", "operation": "Update", "time": "2026-12-01T10:00:05Z",
            "fieldsV1": {"f:spec": {"f:template": {}}}}
    assert drift.drift_reason(digest, _live(DEPLOYMENT, [OURS, edit])) == "edited"
    older = {**edit, "time": "2026-12-01T09:59:00Z"}  # before our last apply: we already took it back
    assert drift.drift_reason(digest, _live(DEPLOYMENT, [OURS, older])) is None
    status = {**edit, "manager": "kube-controller-manager", "subresource": "status", "fieldsV1": {"f:status": {}}}
    revision = {**edit, "manager": "kube-controller-manager", "fieldsV1": {"f:metadata": {"f:annotations": {}}}}
    assert drift.drift_reason(digest, _live(DEPLOYMENT, [OURS, status, revision])) is None
    scaled = {**edit, "subresource": "scale"}  # kubectl scale is an edit of spec.replicas
    assert drift.drift_reason(digest, _live(DEPLOYMENT, [OURS, scaled])) == "edited"


def test_a_config_map_edit_is_a_write_of_its_data() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"},
          "data": {"config.json": "{}"}}
    _, digest = drift.stamp(cm)
    ours = {**OURS, "fieldsV1": {"f:data": {}}}
    edit = {"manager": "kubectl-edit", "operation": "Update", "time": "2026-12-01T10:00:00Z",
            "fieldsV1": {"f:data": {"f:config.json": {}}}}
    assert drift.drift_reason(digest, _live(cm, [ours])) is None
    assert drift.drift_reason(digest, _live(cm, [ours, edit])) == "edited"  # same second: counted as after ours
