"""Children converge: every edit of the session reaches them, every foreign edit of them is undone.

Issue 20, defect 2: editing ``spec.workers.<role>.resources`` or ``tolerations`` changed nothing on
the Deployment while ``status.observedGeneration`` advanced; defect 3: a hand-edited or deleted
ConfigMap was never repaired (ConfigMaps were neither watched nor compared).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.api import Api
from tests.fixtures.waiting import eventually_sync
from tests.operator.test_sessions import ZERO_WORKERS, policy, session
from trading_operator import names
from trading_operator.api.session import Role

pytestmark = pytest.mark.cluster


def _container(api: Api, ns: str, role: Role) -> Any:
    return api.apps.read_namespaced_deployment(names.deployment("d1", role), ns).spec.template.spec


def test_every_session_edit_reaches_the_children_and_foreign_edits_are_undone(api: Api, operator: Any,
                                                                               namespace: str) -> None:
    api.create(namespace, "riskpolicies", policy())
    api.create(namespace, "tradingsessions", session("d1", workers=ZERO_WORKERS))
    eventually_sync(lambda: len(api.apps.list_namespaced_deployment(
        namespace, label_selector=f"{names.LABEL_SESSION}=d1").items) == 5, what="5 deployments")
    cm_name = names.configmap("d1")
    original = eventually_sync(lambda: api.core.read_namespaced_config_map(cm_name, namespace).data["config.json"])

    # Resources and tolerations of a worker: they reach its Deployment, and status says so only then.
    workers = json.loads(json.dumps(ZERO_WORKERS))
    workers["executor"].update({"resources": {"limits": {"cpu": "300m", "memory": "256Mi"}},
                                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "trading",
                                                 "effect": "NoSchedule"}]})
    generation = api.patch(namespace, "tradingsessions", "d1", {"spec": {"workers": workers}})["metadata"]["generation"]
    pod = eventually_sync(lambda: (p := _container(api, namespace, Role.EXECUTOR)).containers[0].resources.limits
                          and p, what="the executor's resources on its Deployment")
    assert pod.containers[0].resources.limits == {"cpu": "300m", "memory": "256Mi"}
    assert [(t.key, t.value, t.effect) for t in pod.tolerations] == [("dedicated", "trading", "NoSchedule")]
    eventually_sync(lambda: (api.get(namespace, "tradingsessions", "d1").get("status") or {})
                    .get("observedGeneration") == generation, what="observedGeneration")

    # A hand edit of the Deployment (another field manager) is undone.
    api.apps.patch_namespaced_deployment(
        names.deployment("d1", Role.EXECUTOR), namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": names.ROLE_SLUG[Role.EXECUTOR],
                                                        "resources": {"limits": {"cpu": "5"}}}]}}}},
        field_manager="kubectl-edit")
    eventually_sync(lambda: _container(api, namespace, Role.EXECUTOR).containers[0].resources.limits
                    == {"cpu": "300m", "memory": "256Mi"}, what="the hand-edited Deployment put back")

    # A hand edit of the ConfigMap is undone; a deleted ConfigMap is recreated.
    api.core.patch_namespaced_config_map(cm_name, namespace, {"data": {"config.json": "{}"}},
                                         field_manager="kubectl-edit")
    expected = eventually_sync(lambda: (d := api.core.read_namespaced_config_map(cm_name, namespace).data["config.json"])
                               != "{}" and d, what="the hand-edited ConfigMap put back")
    assert json.loads(expected)["session"] == json.loads(original)["session"]
    api.core.delete_namespaced_config_map(cm_name, namespace)
    eventually_sync(lambda: api.core.read_namespaced_config_map(cm_name, namespace).data["config.json"] == expected,
                    what="the deleted ConfigMap recreated")

    # A deposed leader's late apply (the same field manager as ours, an older desired object) is put back.
    live = api.core.read_namespaced_config_map(cm_name, namespace)
    stale = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": cm_name, "namespace": namespace, "labels": live.metadata.labels,
                          "annotations": {**live.metadata.annotations, names.ANNOTATION_DESIRED_HASH: "stale"}},
             "data": {"config.json": original}}
    client_ = api.core.api_client
    method, url, headers, body, post = client_.param_serialize(
        "PATCH", f"/api/v1/namespaces/{namespace}/configmaps/{cm_name}", body=stale,
        query_params=[("fieldManager", names.FIELD_MANAGER), ("force", "true")],
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        auth_settings=["BearerToken"])
    assert client_.call_api(method, url, header_params=headers, body=body, post_params=post).status == 200
    eventually_sync(lambda: (m := api.core.read_namespaced_config_map(cm_name, namespace)).data["config.json"] == expected
                    and m.metadata.annotations[names.ANNOTATION_DESIRED_HASH] != "stale",
                    what="the late write of a deposed leader put back")
