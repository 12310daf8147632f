"""``SessionWatch``: a worker's own TradingSession, watched in a thread.

Every version of the session is handed to a callback *in the watch thread*, so a halt reaches the
executor without waiting for the event loop or the operator. The watch re-lists every few seconds;
every successful contact refreshes a "confirmed at" time, which is how the executor knows its view
is fresh (fail-closed when it is not).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from trading_operator.api import metric_names as mn
from trading_operator.api.common import GROUP, VERSION
from trading_workers.runtime.kube import SESSIONS, Kube

WATCH_RESTARTS = mn.collector(mn.SESSION_WATCH_RESTARTS)


class SessionWatch(threading.Thread):
    """Watches one TradingSession; calls ``on_object`` (in this thread) with every newer version.

    ``on_object(None)`` means the session is gone. ``on_lost`` is called when the
    watch fails (the view can no longer be confirmed). Every list, event and
    bookmark refreshes ``confirmed_at`` (``time.monotonic``).
    """

    def __init__(self, kube: Kube, namespace: str, name: str, on_object: Callable[[dict[str, Any] | None], None],
                 on_lost: Callable[[str], None], *, resync_seconds: int = 5) -> None:
        super().__init__(name=f"watch-{namespace}/{name}", daemon=True)
        self.kube, self.namespace, self.name = kube, namespace, name
        self.on_object, self.on_lost = on_object, on_lost
        self.resync_seconds = resync_seconds
        self.confirmed_at = 0.0
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def confirm(self) -> None:
        self.confirmed_at = time.monotonic()

    def run(self) -> None:
        from kubernetes import watch

        api = self.kube.custom(self.kube.new_api_client())
        selector = f"metadata.name={self.name}"
        backoff = 0.2
        while not self._stopped.is_set():
            try:
                listing = api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, SESSIONS,
                                                            field_selector=selector, _request_timeout=10)
                items = listing.get("items") or []
                self.confirm()
                self.on_object(items[0] if items else None)
                backoff = 0.2
                stream = watch.Watch()
                for event in stream.stream(api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                           SESSIONS, field_selector=selector,
                                           resource_version=listing["metadata"]["resourceVersion"],
                                           timeout_seconds=self.resync_seconds, allow_watch_bookmarks=True,
                                           _request_timeout=self.resync_seconds + 5):
                    if self._stopped.is_set():
                        stream.stop()
                        break
                    kind = event.get("type")
                    if kind == "ERROR":
                        break
                    self.confirm()
                    if kind in ("ADDED", "MODIFIED"):
                        self.on_object(event["object"])
                    elif kind == "DELETED":
                        self.on_object(None)
            except Exception as exc:  # any failure: the view is unconfirmed until the next list
                WATCH_RESTARTS.inc()
                self.on_lost(exc.__class__.__name__)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)
