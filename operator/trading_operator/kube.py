"""The operator's few I/O functions against the Kubernetes API.

The official ``kubernetes`` client is synchronous; each call runs in a
thread of its own pool (``POOL_SIZE`` threads) over a connection pool sized for the
operator's concurrency. Errors are translated into the operator's error
taxonomy here, once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from trading_operator import errors, names
from trading_operator.api import common, transactions

T = TypeVar("T")
POOL_SIZE = 16
# Raises unless this process may write now (set by ``leader``: the Lease renewed within its deadline).
# Checked right before every write leaves the process, so a leader frozen past its deadline (SIGSTOP,
# a stalled VM) that wakes up writes nothing before its watchdog ends it.
WRITE_FENCE: Callable[[], None] | None = None


@functools.lru_cache(maxsize=1)
def api_client() -> client.ApiClient:
    configuration = client.Configuration()
    if os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(configuration)


def _translate(exc: ApiException) -> errors.OperatorError:
    body = str(exc.body or "")[:2000]
    if exc.status == 404:
        return errors.NotFound(f"not found: {exc.reason}")
    if exc.status == 409:
        return errors.ApiConflict(f"conflict: {exc.reason}")
    if exc.status == 422 and transactions.PATCH_NOT_APPLICABLE in body:
        return errors.ApiConflict("conflict: a guarded status field changed since it was read (JSON Patch test)")
    if exc.status == 422:
        return errors.InvalidSpec(f"rejected by the API server: {body}", reason="Rejected")
    return errors.ApiUnavailable(f"API error {exc.status}: {exc.reason} {body}")


@functools.lru_cache(maxsize=1)
def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """The threads the client's calls run in: as many as pooled connections (asyncio.to_thread's default
    pool has min(32, cpus + 4) threads, 6 on a 2-core node, which capped the operator at 6 calls in flight)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="kube")


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return await asyncio.get_running_loop().run_in_executor(_executor(), functools.partial(fn, *args, **kwargs))
    except ApiException as exc:
        raise _translate(exc) from exc


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": body["metadata"]["name"],
            "uid": body["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


async def apply(manifest: dict[str, Any], owner: dict[str, Any] | None = None) -> None:
    """Server-side apply under the operator's field manager (creates or puts back what drifted).

    The response (the whole object) is not decoded: nobody reads it, and at 1,000 sessions decoding
    5,000 Deployments was a measurable share of the operator's CPU and transient memory.
    """
    manifest = dict(manifest)
    if owner is not None:
        manifest["metadata"] = {**manifest["metadata"], "ownerReferences": [owner_reference(owner)]}
    group_version, kind = manifest["apiVersion"], manifest["kind"]
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    base = "/apis/apps/v1" if group_version == "apps/v1" else (
        "/api/v1" if group_version == "v1" else f"/apis/{group_version}")
    plural = {"Deployment": "deployments", "ConfigMap": "configmaps", "Job": "jobs", "CronJob": "cronjobs",
              "ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings"}[kind]
    path = f"{base}/namespaces/{ns}/{plural}/{name}"
    await _raw("PATCH", path, manifest, content_type="application/apply-patch+yaml",
               query=[("fieldManager", names.FIELD_MANAGER), ("force", "true")], decode=False)


async def _raw(method: str, path: str, body: Any, content_type: str = "application/json",
               query: list[tuple[str, str]] | None = None, decode: bool = True,
               timeout: float = 30.0) -> dict[str, Any]:
    api = api_client()

    def call() -> dict[str, Any]:
        if method != "GET" and WRITE_FENCE is not None:
            WRITE_FENCE()
        method_, url, headers, body_, post = api.param_serialize(
            method, path, query_params=query or [], body=body, auth_settings=["BearerToken"],
            header_params={"Content-Type": content_type, "Accept": "application/json"})
        resp = api.call_api(method_, url, header_params=headers, body=body_, post_params=post, _request_timeout=timeout)
        data = resp.read()
        if resp.status >= 400:
            raise ApiException(status=resp.status, reason=resp.reason or "", body=(data or b"").decode(errors="replace"))
        return json.loads(data) if data and decode else {}

    return await _call(call)


async def readyz(timeout: float = 2.0) -> None:
    """Raises unless the API server answers ``/readyz`` within ``timeout`` seconds."""
    await _raw("GET", "/readyz", None, decode=False, timeout=timeout)


async def delete(api_version: str, plural: str, namespace: str, name: str) -> None:
    base = "/apis/apps/v1" if api_version == "apps/v1" else ("/api/v1" if api_version == "v1" else f"/apis/{api_version}")
    with contextlib.suppress(errors.NotFound):
        await _raw("DELETE", f"{base}/namespaces/{namespace}/{plural}/{name}", {"propagationPolicy": "Background"})


async def patch_status(plural: str, namespace: str, name: str, status: dict[str, Any],
                       resource_version: str | None) -> dict[str, Any]:
    """Merge-patch ``status``; with a resourceVersion the write fails (ApiConflict) if someone wrote since."""
    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return await _raw("PATCH", f"/apis/{common.API_VERSION}/namespaces/{namespace}/{plural}/{name}/status", body,
                      content_type="application/merge-patch+json")


async def json_patch_status(plural: str, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON Patch on the status subresource; its ``test`` operations are the precondition (a failed one:
    ApiConflict). ``trading_operator.api.transactions`` builds the guards and the operations."""
    return await _raw("PATCH", f"/apis/{common.API_VERSION}/namespaces/{namespace}/{plural}/{name}/status", ops,
                      content_type="application/json-patch+json")


async def namespace_labels(namespace: str) -> dict[str, str]:
    """The labels of a namespace (the live-trading gate reads ``trading.dev/live``)."""
    ns = await _call(client.CoreV1Api(api_client()).read_namespace, namespace)
    return dict((ns.metadata.labels if ns.metadata is not None else None) or {})


async def get(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await _raw("GET", f"/apis/{common.API_VERSION}/namespaces/{namespace}/{plural}/{name}", None)
    except errors.NotFound:
        return None


async def get_object(api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """Any namespaced object by group/version and plural (None when absent)."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    try:
        return await _raw("GET", f"{base}/namespaces/{namespace}/{plural}/{name}", None)
    except errors.NotFound:
        return None


def is_subset(desired: Any, live: Any) -> bool:
    """Whether every field we set is present, equal, in the live object (server defaults may add more)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(
            is_subset(d, v) for d, v in zip(desired, live, strict=True))
    return bool(desired == live)
