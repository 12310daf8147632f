"""Warm start-up time of the local control plane (binaries cached): start -> /readyz -> stop, N times."""

from __future__ import annotations

import statistics
import sys
import time

from trading_dev.controlplane import server


def main(runs: int = 3) -> None:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        with server.running():
            times.append(time.monotonic() - started)
    print(f"control plane warm start to /readyz: median {statistics.median(times):.2f}s "
          f"min {min(times):.2f}s max {max(times):.2f}s over {runs} runs")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
