"""Leader election on a coordination.k8s.io Lease, so two replicas are safe.

Only the holder of the Lease runs kopf; a standby blocks in ``acquire``.
The timing is client-go's: a standby may take the Lease once it has not
been renewed for ``LEASE_SECONDS``; the holder renews every
``RETRY_SECONDS`` and must have renewed within ``RENEW_DEADLINE`` (shorter
than the lease), counted from when the last successful renewal was *sent*.
Every Lease call has a request timeout, so a partition that drops packets
cannot hang the renewal (it used to: the old leader ran on for 18-20 s
after the other replica took the Lease, issue 20). A watchdog thread
exits the process the moment the deadline passes, whatever the renewal
thread is doing; so the old leader stops ``LEASE_SECONDS - RENEW_DEADLINE``
seconds before anyone may take over, and Kubernetes (or the local
platform's supervisor) restarts it as a standby.

A write the old leader sent before the deadline can still land later (a
partition that holds packets, then heals). It is not fenced; it is
converged: every child carries the hash of the whole object the operator
wants and children are watched (``trading_operator.drift``), so the new
leader puts back anything stale as soon as the write lands, and status
writes carry the resourceVersion they were decided from.

The renewals double as the liveness canary: a watch on this one Lease
(field selector on its name, so RBAC can name it) must deliver each
renewal, so a silently dead watch path fails the liveness probe
(``handlers.watch_age``) and the kubelet restarts the operator.
"""

from __future__ import annotations

import datetime as dt
import http.server
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from trading_operator import errors, kube, metrics

LOG = logging.getLogger(__name__)
LEASE_SECONDS = int(os.environ.get("TRADING_LEASE_SECONDS", "15"))
RENEW_DEADLINE = float(os.environ.get("TRADING_LEASE_RENEW_DEADLINE", str(LEASE_SECONDS * 2 / 3)))
RETRY_SECONDS = float(os.environ.get("TRADING_LEASE_RETRY_SECONDS", str(LEASE_SECONDS / 7.5)))
# (connect, read) seconds of every Lease call: a renewal that cannot answer in time has failed.
REQUEST_TIMEOUT = (min(2.0, RENEW_DEADLINE / 4), max(1.0, RENEW_DEADLINE / 4))
if not 0 < RETRY_SECONDS < RENEW_DEADLINE < LEASE_SECONDS:
    raise ValueError(f"lease timing needs 0 < retry ({RETRY_SECONDS}) < renew deadline ({RENEW_DEADLINE}) "
                     f"< lease ({LEASE_SECONDS})")
CURRENT: Leader | None = None  # the process's leader, read by the liveness probe


#: A standby whose lease attempts have not completed for this long is not live (its /healthz says 503).
STANDBY_STALE = 60.0


def _standby_health(address: tuple[str, int], live: Callable[[], bool]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == "/healthz" and live()
            body = b'{"standby": true}' if ok else b'{"standby": true, "live": false}'
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(address, Handler)
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    return server


def identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Leader:
    def __init__(self, name: str, namespace: str) -> None:
        self.name, self.namespace, self.me = name, namespace, identity()
        self.api = client.CoordinationV1Api(kube.api_client())
        self.canary_seen = time.monotonic()
        self.released = False
        self.renewed_at = 0.0  # monotonic time the last successful renewal was sent
        self.attempted_at = time.monotonic()  # monotonic time the last lease attempt completed

    def _canary(self) -> None:
        """Watch our own Lease; every delivered event (our renewals) refreshes ``canary_seen``."""
        while True:
            try:
                stream = watch.Watch().stream(self.api.list_namespaced_lease, self.namespace,
                                              field_selector=f"metadata.name={self.name}", timeout_seconds=60,
                                              _request_timeout=90)
                for _ in stream:
                    self.canary_seen = time.monotonic()
            except Exception as exc:
                LOG.warning("lease canary watch failed: %s", exc)
                time.sleep(2)

    def _try(self) -> bool:
        now = _now()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(holder_identity=self.me, lease_duration_seconds=LEASE_SECONDS,
                                        acquire_time=now, renew_time=now, lease_transitions=0))
            try:
                self.api.create_namespaced_lease(self.namespace, body, _request_timeout=REQUEST_TIMEOUT)
                return True
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
        spec = lease.spec or client.V1LeaseSpec()
        lease.spec = spec
        expired = spec.renew_time is None or (now - spec.renew_time).total_seconds() > (spec.lease_duration_seconds or 0)
        if spec.holder_identity != self.me and not expired:
            return False
        if spec.holder_identity != self.me:
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.acquire_time = now
        spec.holder_identity, spec.renew_time, spec.lease_duration_seconds = self.me, now, LEASE_SECONDS
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def acquire(self, health: tuple[str, int] | None = None) -> None:
        """Block until this process holds the Lease.

        ``health`` (address, port): serve ``/healthz`` there while waiting, so a standby's liveness
        probe passes (kopf serves it only once it runs, and a standby without one was restarted by
        the kubelet every minute). It answers 200 while lease attempts complete (won or not) within
        ``STANDBY_STALE`` seconds, 503 when they hang.
        """
        global CURRENT
        CURRENT = self
        LOG.info("waiting for leadership of lease %s/%s as %s", self.namespace, self.name, self.me)
        server = _standby_health(health, lambda: time.monotonic() - self.attempted_at < STANDBY_STALE) \
            if health else None
        try:
            while True:
                try:
                    sent = time.monotonic()
                    won = self._try()
                    self.attempted_at = time.monotonic()
                    if won:
                        self.renewed_at = sent
                        kube.WRITE_FENCE = self.fence
                        LOG.info("acquired leadership as %s", self.me)
                        threading.Thread(target=self._watchdog, name="lease-watchdog", daemon=True).start()
                        threading.Thread(target=self._renew, name="lease-renew", daemon=True).start()
                        threading.Thread(target=self._canary, name="lease-canary", daemon=True).start()
                        return
                except Exception as exc:
                    LOG.warning("lease acquire failed: %s", exc)
                time.sleep(RETRY_SECONDS)
        finally:
            if server is not None:  # kopf's liveness endpoint takes the port over
                server.shutdown()
                server.server_close()

    def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over at once instead of after expiry."""
        self.released = True
        try:
            if time.monotonic() - self.renewed_at >= RENEW_DEADLINE:
                return  # not ours to release any more
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
            if lease.spec is not None and lease.spec.holder_identity == self.me:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT)
                LOG.info("released leadership")
        except Exception as exc:  # the lease expires by itself anyway
            LOG.warning("lease release failed: %s", exc)

    def _renew(self) -> None:
        while not self.released:
            time.sleep(RETRY_SECONDS)
            if self.released:
                return
            sent = time.monotonic()
            try:
                if self._try():
                    self.renewed_at = sent
                    continue
                LOG.error("leadership lost to another replica; exiting")
            except Exception as exc:
                LOG.warning("lease renew failed: %s", exc)
                continue  # the watchdog ends the process once the renew deadline passes
            os._exit(1)

    def fence(self) -> None:
        """Refuse a write once the renew deadline has passed (the watchdog is about to end the process)."""
        if time.monotonic() - self.renewed_at >= RENEW_DEADLINE:
            metrics.FENCED_WRITES.inc()
            LOG.error("write fenced: the lease was not renewed within %.1fs", RENEW_DEADLINE)
            raise errors.ApiUnavailable("not the leader any more: write fenced")

    def _watchdog(self) -> None:
        """Exit the moment the renew deadline passes: a leader that may have lost the Lease stops acting."""
        while not self.released:
            late = time.monotonic() - self.renewed_at
            if late >= RENEW_DEADLINE:
                LOG.error("could not renew the lease within %.1fs; exiting", RENEW_DEADLINE)
                os._exit(1)
            time.sleep(min(0.1, RENEW_DEADLINE - late))
