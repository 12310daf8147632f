"""What every worker process exports about itself: errors it logged, and the CPU and memory it may use.

The runbooks' resource alerts are relative (CPU 75-85 %, memory 80-90 % of what the worker may
use), so each worker exports its own limits next to prometheus-client's ``process_*`` metrics:
the cgroup's CPU quota and memory limit (what a container's resources.limits become), else the
machine's CPUs and memory (a process without limits may use the machine). Errors are log records
at ERROR or above, counted by a logging handler, so any role's failure shows up without each
call site counting it.
"""

from __future__ import annotations

import logging
import os
import pathlib

from trading_operator.api import metric_names as mn

ERRORS = mn.collector(mn.WORKER_ERRORS)
CPU_LIMIT = mn.collector(mn.WORKER_CPU_LIMIT)
MEMORY_LIMIT = mn.collector(mn.WORKER_MEMORY_LIMIT)

CGROUP = pathlib.Path("/sys/fs/cgroup")


class ErrorCounter(logging.Handler):
    """Counts records at ERROR and above (formats nothing, writes nothing)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        ERRORS.inc()


def cpu_limit(cgroup: pathlib.Path = CGROUP) -> float:
    """CPU cores: cgroup v2 ``cpu.max`` quota/period, else the CPUs this process may run on."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    return float(len(os.sched_getaffinity(0)))


def memory_limit(cgroup: pathlib.Path = CGROUP, meminfo: pathlib.Path = pathlib.Path("/proc/meminfo")) -> float:
    """Bytes: cgroup v2 ``memory.max``, else the machine's MemTotal."""
    try:
        text = (cgroup / "memory.max").read_text().strip()
        if text != "max":
            return float(int(text))
    except (OSError, ValueError):
        pass
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return float(int(line.split()[1]) * 1024)
    raise RuntimeError(f"no MemTotal in {meminfo}")


def install() -> None:
    """Count error logs on the root logger and export the process's limits."""
    root = logging.getLogger()
    if not any(isinstance(h, ErrorCounter) for h in root.handlers):
        root.addHandler(ErrorCounter())
    CPU_LIMIT.set(cpu_limit())
    MEMORY_LIMIT.set(memory_limit())
