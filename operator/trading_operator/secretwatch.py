"""Which version of each Secret a session's workers use: a metadata-only watch of Secrets.

A worker reads its credentials (``secretKeyRef`` env) when its pod starts, so a rotated Secret
reaches it only when the pod is replaced. To roll the right workers in a safe order
(``reconcile.session``'s rotation step, docs/security.md), the operator must notice that a Secret
changed. It watches Secrets as ``PartialObjectMetadata``: the API server sends names and
resourceVersions, never the data, so no credential ever enters the operator's memory, logs or
metrics. (RBAC cannot grant metadata alone: the chart's ``list``/``watch`` on Secrets would allow
reading the data; the operator does not ask for it. Creating Deployments in a namespace already
lets the operator run a pod that mounts any of its Secrets, so this widens nothing a compromised
operator could reach — docs/decisions/0020-automatic-secret-rotation.md.)

A Secret's *version* is its ``metadata.resourceVersion``: it changes with every write that changes
the object (``kubectl apply`` of identical content does not write). ``ABSENT`` stands for a Secret
that does not exist.

The watch runs in a thread per namespace (or one cluster-wide), relisting after a 410 or an error.
``SecretVersions.synced`` is True once every namespace was listed: before that the operator must
not compare versions (an empty cache would read as "every Secret changed"), so the startup handler
waits for the first list. If the operator may not list Secrets (``rotation.enabled=false`` in the
chart), ``disabled`` says why and sessions report their Secret versions as unknown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable

from kubernetes.client.rest import ApiException

from trading_operator import kube

__all__ = ["ABSENT", "VERSIONS", "SecretVersions"]

log = logging.getLogger(__name__)
ABSENT = "absent"
_META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_META = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
Key = tuple[str, str]  # (namespace, secret name)


class SecretVersions:
    """Secret name -> resourceVersion per namespace, kept by a metadata-only watch."""

    def __init__(self) -> None:
        self._versions: dict[Key, str] = {}
        self._listed: set[str] = set()   # namespaces ("" = cluster-wide) listed at least once
        self._wanted: set[str] = set()
        self._lock = threading.Lock()
        self.disabled: str | None = "not started"
        # (namespace, secret) -> sessions whose workers use it (kept by the reconcile); a change wakes them.
        self._users: dict[Key, set[str]] = {}
        self._on_change: Callable[[str, str], None] = lambda ns, name: None
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ queries (event loop)

    @property
    def synced(self) -> bool:
        return self.disabled is None and self._wanted <= self._listed

    def versions(self, namespace: str, names: Iterable[str]) -> dict[str, str] | None:
        """The version of each named Secret; None while the versions cannot be known."""
        if not self.synced:
            return None
        with self._lock:
            return {name: self._versions.get((namespace, name), ABSENT) for name in names}

    def used_by(self, namespace: str, session: str, names: Iterable[str]) -> None:
        """Record which Secrets a session's workers use (a change to one of them wakes the session)."""
        names = set(names)
        with self._lock:
            for key, users in list(self._users.items()):
                if key[0] == namespace and key[1] not in names:
                    users.discard(session)
                    if not users:
                        del self._users[key]
            for name in names:
                self._users.setdefault((namespace, name), set()).add(session)

    def forget(self, namespace: str, session: str) -> None:
        self.used_by(namespace, session, ())

    # ------------------------------------------------------------------ the watch (threads)

    def set(self, namespace: str, name: str, version: str | None) -> None:
        """Record a version (None: deleted); wakes the sessions using the Secret if it changed."""
        key = (namespace, name)
        with self._lock:
            old = self._versions.get(key)
            if version is None:
                self._versions.pop(key, None)
            else:
                self._versions[key] = version
            users = sorted(self._users.get(key, ())) if old != version else []
        for session in users:
            self._on_change(namespace, session)

    async def start(self, namespaces: list[str], on_change: Callable[[str, str], None],
                    first_list_timeout: float = 30.0) -> None:
        """List every namespace once (so ``synced`` holds before any reconcile), then watch in threads.
        ``on_change(namespace, session)`` is called on the event loop."""
        loop = asyncio.get_running_loop()

        def notify(namespace: str, session: str) -> None:
            loop.call_soon_threadsafe(on_change, namespace, session)

        self._on_change = notify
        scopes = namespaces or [""]
        self._wanted = set(scopes)
        try:
            rvs = await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(self._list, ns) for ns in scopes)),
                                         first_list_timeout)
        except ApiException as exc:
            self.disabled = f"the operator may not list Secrets ({exc.status} {exc.reason})"
            log.warning("secret rotation disabled: %s", self.disabled)
            return
        except Exception as exc:  # any failure leaves rotation off, never the operator down
            self.disabled = f"listing Secrets failed: {exc}"
            log.warning("secret rotation disabled: %s", self.disabled)
            return
        self.disabled = None
        for ns, rv in zip(scopes, rvs, strict=True):
            threading.Thread(target=self._watch_forever, args=(ns, rv), daemon=True,
                             name=f"secret-watch-{ns or 'all'}").start()

    def stop(self) -> None:
        """Let the watch threads end (at their next event or reconnect; they are daemons)."""
        self._stopped.set()

    def _path(self, namespace: str) -> str:
        return f"/api/v1/namespaces/{namespace}/secrets" if namespace else "/api/v1/secrets"

    def _request(self, namespace: str, query: list[tuple[str, str]], accept: str, timeout: float):  # type: ignore[no-untyped-def]
        api = kube.api_client()
        method, url, headers, body, post = api.param_serialize(
            "GET", self._path(namespace), query_params=query, auth_settings=["BearerToken"],
            header_params={"Accept": accept})
        resp = api.call_api(method, url, header_params=headers, body=body, post_params=post,
                            _request_timeout=timeout)
        if resp.status >= 400:
            raise ApiException(status=resp.status, reason=resp.reason or "",
                               body=(resp.read() or b"").decode(errors="replace"))
        return resp

    def _list(self, namespace: str) -> str:
        """One metadata-only list: replaces what is known of ``namespace``; returns the list's resourceVersion."""
        resp = self._request(namespace, [], _META_LIST, 30.0)
        data = json.loads(resp.read())
        seen = {(item["metadata"]["namespace"], item["metadata"]["name"]): item["metadata"]["resourceVersion"]
                for item in data.get("items") or []}
        with self._lock:
            gone = [k for k in self._versions if (not namespace or k[0] == namespace) and k not in seen]
        for key in gone:
            self.set(key[0], key[1], None)
        for key, version in seen.items():
            self.set(key[0], key[1], version)
        with self._lock:
            self._listed.add(namespace)
        return str(data["metadata"]["resourceVersion"])

    def _watch_forever(self, namespace: str, rv: str) -> None:
        backoff = 1.0
        while not self._stopped.is_set():
            try:
                rv = self._watch(namespace, rv)
                backoff = 1.0
            except Exception as exc:  # relist and go on; a missed change is found by the relist
                log.info("secret watch of %s ended (%s); relisting", namespace or "all namespaces", exc)
                if self._stopped.wait(backoff):
                    return
                backoff = min(backoff * 2, 30.0)
                try:
                    rv = self._list(namespace)
                except Exception as exc2:  # the next round tries again
                    log.warning("secret relist of %s failed: %s", namespace or "all namespaces", exc2)

    def _watch(self, namespace: str, rv: str) -> str:
        query = [("watch", "true"), ("resourceVersion", rv), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", "300")]
        resp = self._request(namespace, query, _META, 330.0)
        buffer = b""
        for chunk in resp.response.stream(4096, decode_content=True):
            buffer += chunk
            if self._stopped.is_set():
                return rv
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                meta = obj.get("metadata") or {}
                if event.get("type") == "ERROR":
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                rv = meta.get("resourceVersion") or rv
                if event.get("type") == "BOOKMARK":
                    continue
                self.set(meta["namespace"], meta["name"],
                         None if event.get("type") == "DELETED" else meta["resourceVersion"])
        return rv


VERSIONS = SecretVersions()
