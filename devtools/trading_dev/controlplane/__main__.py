"""``make cluster-api``: run the local control plane (kube-apiserver + etcd) in the foreground until Ctrl-C.

Its admin kubeconfig is at ``--kubeconfig`` while it runs and removed when it stops."""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import time

from trading_dev import kubeconfig
from trading_dev.controlplane import build, server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local kube-apiserver + etcd until Ctrl-C.")
    parser.add_argument("--kubeconfig", default=".dev/kubeconfig", help="where to write the admin kubeconfig")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        with server.running() as cp, kubeconfig.published(cp.kubeconfig_path, pathlib.Path(args.kubeconfig)) as target:
            print(f"control plane ready in {time.monotonic() - started:.1f}s at {cp.url}", flush=True)
            print(f"  export KUBECONFIG={target.resolve()}", flush=True)
            print("  Ctrl-C stops it.", flush=True)
            stop = False

            def _stop(*_: object) -> None:
                nonlocal stop
                stop = True

            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)  # also when started in the background (SIGINT ignored there)
            try:
                while not stop:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            print("stopping control plane", flush=True)
    except (build.BuildError, server.ControlPlaneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
