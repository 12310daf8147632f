"""``make cluster``: a real single-node cluster in the foreground until Ctrl-C.

``--no-gpu`` starts the node without the GPU pool's label and extended resource
(what a user sees when no GPU node exists: inference stays Pending).
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import time
from collections.abc import Callable

from trading_dev import kubeconfig
from trading_dev.cluster import node
from trading_dev.controlplane import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a real single-node Kubernetes cluster until Ctrl-C.")
    parser.add_argument("--kubeconfig", default=".dev/kubeconfig", help="where to write the admin kubeconfig")
    parser.add_argument("--no-gpu", action="store_true", help="no GPU pool label or nvidia.com/gpu resource")
    args = parser.parse_args(argv)
    cluster = node.Cluster(gpu=not args.no_gpu, progress=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    # SIGINT too: a shell that starts this in the background ignores SIGINT, and Ctrl-C must stop it.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        cluster.start()
    except node.ClusterBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (build.BuildError, node.ClusterError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        with kubeconfig.published(cluster.kubeconfig_path, pathlib.Path(args.kubeconfig)) as target:
            _serve(cluster, target, lambda: stop)
    finally:
        print("[cluster] stopping", flush=True)
        cluster.stop()
    return 0


def _serve(cluster: node.Cluster, target: pathlib.Path, stopped: Callable[[], bool]) -> None:
    print(f"[cluster] ready at {cluster.url}: one node ({node.NODE_NAME}), Kubernetes {cluster.version}",
          flush=True)
    print(f"  export KUBECONFIG={target.resolve()}", flush=True)
    print("  Ctrl-C stops it and removes everything it made (this kubeconfig too).", flush=True)
    while not stopped():
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
