"""Leader election on a coordination.k8s.io Lease, so two replicas are safe.

Only the holder of the Lease runs kopf; a standby blocks in ``acquire``.
The holder renews from a thread; if it cannot renew before the lease
expires it exits the process at once (a leader that may have lost the
lease must stop acting), and Kubernetes restarts it as a standby.
The renewals double as the liveness canary: the operator watches its own
Lease, so a watch that stops delivering is noticed (see handlers.probe).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time

from kubernetes import client
from kubernetes.client.rest import ApiException

from trading_operator import kube

LOG = logging.getLogger(__name__)
LEASE_SECONDS = 15
CANARY_LABEL = "trading.dev/operator-lease"


def identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Leader:
    def __init__(self, name: str, namespace: str) -> None:
        self.name, self.namespace, self.me = name, namespace, identity()
        self.api = client.CoordinationV1Api(kube.api_client())

    def _try(self) -> bool:
        now = _now()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace, labels={CANARY_LABEL: "true"}),
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
        if lease.metadata is not None:
            lease.metadata.labels = {**(lease.metadata.labels or {}), CANARY_LABEL: "true"}
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def acquire(self) -> None:
        LOG.info("waiting for leadership of lease %s/%s as %s", self.namespace, self.name, self.me)
        while True:
            try:
                if self._try():
                    LOG.info("acquired leadership as %s", self.me)
                    threading.Thread(target=self._renew, name="lease-renew", daemon=True).start()
                    return
            except Exception as exc:
                LOG.warning("lease acquire failed: %s", exc)
            time.sleep(2)

    def _renew(self) -> None:
        last_ok = time.monotonic()
        while True:
            time.sleep(LEASE_SECONDS / 3)
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
