"""``python -m trading_operator.uninstall_guard``: the chart's pre-delete hook; refuses while sessions exist.

``helm uninstall`` runs it (a Job on the operator's image and ServiceAccount) before Helm deletes
anything. While a TradingSession exists in the namespaces the release serves, it exits 1 and the
uninstall stops with the operator still running: deleting the operator first would leave the
sessions' worker Deployments trading unsupervised and each session stuck on its finalizer, with
nobody to halt it and handle its open orders. It names the sessions and the deliberate way out
(delete them, which halts each and lets its executor cancel or flatten per ``onHalt``, then
uninstall again). With no session left it exits 0 and the uninstall proceeds.
docs/decisions/0014-uninstall-refuses-while-sessions-exist.md says why it refuses rather than
deleting the sessions itself.

Exit status: 0 no session (or the CRD is already gone), 1 sessions exist, 2 the API could not be asked.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast

from kubernetes.client import CustomObjectsApi
from kubernetes.client.rest import ApiException

from trading_operator import kube

GROUP, VERSION, PLURAL = "trading.dev", "v1alpha1", "tradingsessions"


def sessions(namespaces: list[str]) -> list[tuple[str, str, str]]:
    """(namespace, name, phase) of every TradingSession in ``namespaces`` (all namespaces when empty)."""
    api = CustomObjectsApi(kube.api_client())
    items: list[dict[str, Any]] = []
    try:
        if namespaces:
            for ns in namespaces:
                found = cast(dict[str, Any], api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL))
                items += found["items"]
        else:
            every = cast(dict[str, Any], api.list_cluster_custom_object(GROUP, VERSION, PLURAL))
            items = every["items"]
    except ApiException as exc:
        if exc.status == 404:  # the CRD is not installed (any more): no session can exist
            return []
        raise
    return sorted((s["metadata"]["namespace"], s["metadata"]["name"], (s.get("status") or {}).get("phase") or "-")
                  for s in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trading_operator.uninstall_guard",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", action="append", default=[],
                        help="a namespace the release serves (repeat; none: every namespace)")
    parser.add_argument("--release", default="trading-platform", help="the Helm release, named in the message")
    parser.add_argument("--release-namespace", default="", help="the release's namespace, named in the message")
    args = parser.parse_args(argv)
    where = ", ".join(args.namespace) if args.namespace else "any namespace"
    try:
        found = sessions(args.namespace)
    except Exception as exc:  # any failure to ask means: do not let the uninstall proceed
        print(f"uninstall refused: could not list TradingSessions in {where}: {exc}", file=sys.stderr)
        return 2
    if not found:
        print(f"no TradingSession in {where}: the uninstall may proceed")
        return 0
    namespaces = sorted({ns for ns, _, _ in found})
    print(f"uninstall refused: {len(found)} TradingSession(s) still exist, and the operator must stay to halt "
          f"each one and let its executor handle its open orders before its finalizer releases it:", file=sys.stderr)
    for ns, name, phase in found:
        print(f"  {ns}/{name} (phase {phase})", file=sys.stderr)
    print("Delete them first, deliberately (each is halted and its open orders cancelled or flattened per its "
          "spec.onHalt), wait until they are gone, then uninstall again:", file=sys.stderr)
    for ns in namespaces:
        print(f"  kubectl -n {ns} delete tradingsessions --all --wait", file=sys.stderr)
    in_ns = f" -n {args.release_namespace}" if args.release_namespace else ""
    print(f"  helm uninstall {args.release}{in_ns}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
