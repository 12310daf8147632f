"""``make up``: the whole local platform, kept running for you to drive by hand.

The same platform as ``make demo DEMO_ARGS=--runtime=process`` (control plane, Redis, PostgreSQL, the CRDs, the operator and the
local process runtime that runs worker Deployments as processes), without the story: it stays up
until Ctrl-C (or ``make down`` from another terminal), so ``kubectl apply -f examples/`` and every
row of the README's runbook table — with ``kubectl trading`` — can be tried on real parts.

While it runs, ``.dev/kubeconfig`` is the admin kubeconfig and ``.dev/up.pid`` holds this process's
id; both are removed when it stops (the logs stay in ``.dev/up``). ``--apply`` applies the files given (e.g. ``examples/``) once
the platform is ready.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import sys
import time

from trading_dev.platform import ROOT, S3_BUCKETS, LocalPlatform, PlatformError

DEV = ROOT / ".dev"
PID_FILE = DEV / "up.pid"
KUBECONFIG = DEV / "kubeconfig"


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def up(apply: list[str]) -> int:
    if PID_FILE.exists():
        other = PID_FILE.read_text().strip()
        if other.isdigit() and _alive(int(other)):
            print(f"a platform is already up (pid {other}); stop it with `make down` first", file=sys.stderr)
            return 1
    DEV.mkdir(parents=True, exist_ok=True)
    PID_FILE.write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, _stop)
    print("starting the local control plane, Redis, PostgreSQL, the S3-compatible object store, the CRDs, the "
          "operator and the local process runtime (about 10 s warm) ...", flush=True)
    started = time.monotonic()
    try:
        with LocalPlatform(DEV / "up", kubeconfig_out=KUBECONFIG) as platform:
            print(f"ready in {time.monotonic() - started:.0f}s.", flush=True)
            for path in apply:
                out = platform.kubectl("apply", "-f", str(ROOT / path) if not os.path.isabs(path) else path)
                print(out.stdout.strip(), flush=True)
            print(f"\n  export KUBECONFIG={KUBECONFIG}\n"
                  "  kubectl apply -f examples/riskpolicy.yaml -f examples/session-simulated.yaml\n"
                  "  kubectl get trading\n"
                  "  plugin/kubectl-trading status demo --watch\n\n"
                  f"S3 (versitygw): {platform.s3.endpoint if platform.s3 else '?'}, buckets "
                  f"{', '.join(S3_BUCKETS)}; its keys as a Secret for Backups and s3:// models:\n"
                  f"  kubectl create secret generic trading-s3 --from-env-file={platform.s3_env_file}\n\n"
                  "Ctrl-C here (or `make down`) stops everything; logs stay in .dev/up/logs.", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping: workers, operator, servers ...", flush=True)
        return 0
    except PlatformError as exc:
        print(f"platform failed: {exc}", file=sys.stderr)
        return 1
    finally:
        KUBECONFIG.unlink(missing_ok=True)
        PID_FILE.unlink(missing_ok=True)
        print("stopped; .dev/kubeconfig and .dev/up.pid removed.", flush=True)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it has stopped)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def down() -> int:
    if not PID_FILE.exists():
        print("no platform is up (.dev/up.pid is absent)")
        return 0
    pid = int(PID_FILE.read_text().strip() or 0)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        PID_FILE.unlink(missing_ok=True)
        print(f"pid {pid} was not running; removed the stale .dev/up.pid")
        return 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        print(f"pid {pid} still running after 60 s", file=sys.stderr)
        return 1
    print(f"platform (pid {pid}) stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trading_dev.up", description=__doc__.split("\n\n")[0],
                                     epilog="make up / make down run this.")
    parser.add_argument("--down", action="store_true", help="stop a platform started by `make up`")
    parser.add_argument("--apply", nargs="*", default=[], help="files or folders to kubectl apply once ready")
    args = parser.parse_args(argv)
    return down() if args.down else up(args.apply)


if __name__ == "__main__":
    sys.exit(main())
