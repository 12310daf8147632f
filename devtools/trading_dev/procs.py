"""Stopping a process we started: SIGTERM to its process group, a grace period, then SIGKILL.

Every long-lived process the dev tooling, tests and benchmarks start (etcd,
kube-apiserver, the operator, worker processes) is started with
``start_new_session=True``, so its children go with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """Stop ``proc`` and its process group; returns once it has exited."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
