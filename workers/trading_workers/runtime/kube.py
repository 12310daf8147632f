"""The Kubernetes API as the workers use it: a few typed calls, one error taxonomy.

The official client is synchronous; every call runs in a thread. The client reads ``KUBECONFIG``
when set, else the pod's in-cluster credentials. Failures become the workers' errors, with the
same meaning of an HTTP status as the operator's wrapper (``trading_operator.kube``):

* 404 -> ``NotFound``: the object is gone. Not retried blindly and not fatal either: the caller
  decides (the executor treats its session gone as a halt, the risk worker stops reporting);
* 409, or 422 for a JSON Patch that does not apply (a failed ``test``) -> ``Conflict`` (transient): the
  object changed since it was read; read again and retry;
* 429, 5xx, no answer -> ``DependencyUnavailable("apiserver")`` (transient);
* any other status -> ``PermanentError``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, TypeVar

from trading_operator.api import metric_names as mn
from trading_operator.api.common import GROUP, VERSION
from trading_operator.api.transactions import PATCH_NOT_APPLICABLE
from trading_workers.errors import ConfigError, DependencyUnavailable, PermanentError, TradingError, TransientError

SESSIONS = "tradingsessions"
POLICIES = "riskpolicies"
BACKUPS = "backups"
T = TypeVar("T")

API_ERRORS = mn.collector(mn.APISERVER_ERRORS)


class NotFound(TradingError):
    """The object does not exist (neither transient nor permanent: the caller decides what a gone object means)."""


class Conflict(TransientError):
    """The object changed since it was read (optimistic concurrency); read again and retry."""


class Kube:
    """The Kubernetes API, called from threads (the official client is synchronous)."""

    def __init__(self) -> None:
        from kubernetes import client, config

        self._client_mod = client
        cfg = client.Configuration()
        kubeconfig = os.environ.get("KUBECONFIG")
        try:
            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig.split(os.pathsep)[0], client_configuration=cfg)
            else:
                config.load_incluster_config(client_configuration=cfg)
        except Exception as exc:
            raise ConfigError(f"no Kubernetes credentials (KUBECONFIG or in-cluster): {exc}") from exc
        self.configuration = cfg
        self.api_client = client.ApiClient(configuration=cfg)

    def new_api_client(self) -> Any:
        return self._client_mod.ApiClient(configuration=self.configuration)

    def custom(self, api_client: Any = None) -> Any:
        return self._client_mod.CustomObjectsApi(api_client or self.api_client)

    async def call(self, op: str, fn: Callable[[], T]) -> T:
        """Run one client call in a thread; its failure as the taxonomy above."""
        from kubernetes.client.rest import ApiException

        try:
            return await asyncio.to_thread(fn)
        except ApiException as exc:
            API_ERRORS.labels(op).inc()
            if exc.status == 404:
                raise NotFound(f"{op}: not found") from exc
            if exc.status == 409 or (exc.status == 422 and PATCH_NOT_APPLICABLE in str(exc.body or "")):
                raise Conflict(f"{op}: conflict") from exc
            if exc.status in (429, 500, 502, 503, 504) or exc.status is None or exc.status == 0:
                raise DependencyUnavailable("apiserver", f"{op}: HTTP {exc.status}") from exc
            raise PermanentError(f"{op}: HTTP {exc.status}: {exc.reason}") from exc
        except Exception as exc:  # urllib3 connection errors, timeouts
            API_ERRORS.labels(op).inc()
            raise DependencyUnavailable("apiserver", f"{op}: {exc.__class__.__name__}") from exc

    async def get_session(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.call("get_session", lambda: self.custom().get_namespaced_custom_object(
            GROUP, VERSION, namespace, SESSIONS, name, _request_timeout=10))

    async def patch_session_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch on the status subresource (a ``metadata.resourceVersion`` in ``body`` is a precondition)."""
        return await self.call("patch_status", lambda: self.custom().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, SESSIONS, name, body, _request_timeout=10))

    async def json_patch_session_status(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """A JSON Patch on the status subresource; a failed ``test`` operation (the API server's 422 for a
        patch that does not apply) is a ``Conflict``, like a stale resourceVersion."""
        return await self.call("patch_status", lambda: self.custom().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, SESSIONS, name, ops, _request_timeout=10,
            _content_type="application/json-patch+json"))

    async def get_backup(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.call("get_backup", lambda: self.custom().get_namespaced_custom_object(
            GROUP, VERSION, namespace, BACKUPS, name, _request_timeout=10))

    async def patch_backup_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch on a Backup's status subresource (``metadata.resourceVersion`` in ``body``: a precondition)."""
        return await self.call("patch_backup_status", lambda: self.custom().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, BACKUPS, name, body, _request_timeout=10))

    async def get_policy(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.call("get_policy", lambda: self.custom().get_namespaced_custom_object(
            GROUP, VERSION, namespace, POLICIES, name, _request_timeout=10))

    async def create_event(self, namespace: str, body: Any) -> None:
        """Create an Event (``body``: a dict or a ``CoreV1Event``)."""
        core = self._client_mod.CoreV1Api(self.api_client)
        await self.call("create_event", lambda: core.create_namespaced_event(namespace, body,  # type: ignore[arg-type]
                                                                              _request_timeout=10))

    async def patch_event(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        core = self._client_mod.CoreV1Api(self.api_client)
        await self.call("patch_event", lambda: core.patch_namespaced_event(name, namespace, body,
                                                                           _request_timeout=10))

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        core = self._client_mod.CoreV1Api(self.api_client)
        cm = await self.call("read_configmap", lambda: core.read_namespaced_config_map(name, namespace,
                                                                                         _request_timeout=10))
        return dict(cm.data or {})


def resource_version(obj: dict[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0
