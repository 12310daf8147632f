"""Warm start-up time of the local control plane (binaries cached): start -> /readyz -> stop, N times.

Every test session, ``make demo`` and the halt and scale benchmarks pay this
before anything else; it is not one of issue 8's four figures, so ``make
bench`` runs it only when named (``python -m benchmarks controlplane``).
No baseline: the floor would be etcd alone, which this does not start apart.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from benchmarks.common import figure
from trading_dev.controlplane import server

COMMAND = ".venv/bin/python -m benchmarks controlplane"


def run(runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        with server.running():
            times.append(time.monotonic() - started)
    return times


def rows(times: list[float], command: str = COMMAND) -> list[dict[str, Any]]:
    return [figure(f"control plane warm start to /readyz, median of {len(times)}", statistics.median(times), "s",
                   None, "", "", None, command)]


def main(runs: int = 3) -> None:
    times = run(runs)
    print(f"control plane warm start to /readyz: median {statistics.median(times):.2f}s "
          f"min {min(times):.2f}s max {max(times):.2f}s over {runs} runs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.controlplane_startup",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=3, help="start-ups to time (default 3)")
    main(parser.parse_args().runs)
