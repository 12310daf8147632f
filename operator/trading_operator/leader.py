"""Leader election on a coordination.k8s.io Lease, so two replicas are safe.

Only the holder of the Lease runs kopf; a standby blocks in ``acquire``.
The holder renews from a thread; if it cannot renew before the lease
expires it exits the process at once (a leader that may have lost the
lease must stop acting), and Kubernetes restarts it as a standby.
The renewals double as the liveness canary: a watch on this one Lease
(field selector on its name, so RBAC can name it) must deliver each
renewal, so a silently dead watch path fails the liveness probe
(``handlers.watch_age``) and the kubelet restarts the operator.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from trading_operator import kube

LOG = logging.getLogger(__name__)
LEASE_SECONDS = 15
CURRENT: Leader | None = None  # the process's leader, read by the liveness probe


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
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(holder_identity=self.me, lease_duration_seconds=LEASE_SECONDS,
                                        acquire_time=now, renew_time=now, lease_transitions=0))
            try:
                self.api.create_namespaced_lease(self.namespace, body)
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
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def acquire(self) -> None:
        global CURRENT
        CURRENT = self
        LOG.info("waiting for leadership of lease %s/%s as %s", self.namespace, self.name, self.me)
        while True:
            try:
                if self._try():
                    LOG.info("acquired leadership as %s", self.me)
                    threading.Thread(target=self._renew, name="lease-renew", daemon=True).start()
                    threading.Thread(target=self._canary, name="lease-canary", daemon=True).start()
                    return
            except Exception as exc:
                LOG.warning("lease acquire failed: %s", exc)
            time.sleep(2)

    def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over at once instead of after expiry."""
        self.released = True
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is not None and lease.spec.holder_identity == self.me:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
                LOG.info("released leadership")
        except Exception as exc:  # the lease expires by itself anyway
            LOG.warning("lease release failed: %s", exc)

    def _renew(self) -> None:
        last_ok = time.monotonic()
        while not self.released:
            time.sleep(LEASE_SECONDS / 3)
            if self.released:
                return
            try:
                if self._try():
                    last_ok = time.monotonic()
                    continue
                LOG.error("leadership lost to another replica; exiting")
            except Exception as exc:
                LOG.warning("lease renew failed: %s", exc)
                if time.monotonic() - last_ok < LEASE_SECONDS:
                    continue
                LOG.error("could not renew the lease for %ss; exiting", LEASE_SECONDS)
            os._exit(1)
