"""``python -m trading_operator``: leader election, then kopf with JSON logs and a liveness endpoint."""

from __future__ import annotations

import argparse
import logging
import sys

import kopf

from trading_operator import handlers, leader
from trading_operator.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the trading-platform operator.")
    parser.add_argument("--namespace", action="append", default=[], help="watch only these namespaces")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--log-format", default="json", choices=["json", "plain", "full"])
    args = parser.parse_args(argv)
    settings = Settings()
    # kopf's handler on the root logger formats every record (ours too): no basicConfig, or each
    # line would be written twice, once plain and once structured.
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not "handler succeeded" per event
    lease = leader.Leader(settings.lease_name, settings.lease_namespace) if settings.leader_election else None
    if lease is not None:
        lease.acquire(health=(settings.bind_address, settings.liveness_port))
    handlers.NAMESPACES[:] = args.namespace  # registers every handler; the Secret watch follows --namespace
    try:
        kopf.run(
            standalone=True,  # leadership comes from the Lease, not kopf peering
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=f"http://{settings.bind_address}:{settings.liveness_port}/healthz",
        )
    finally:
        if lease is not None:
            lease.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
