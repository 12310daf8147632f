"""Resident memory of a running real cluster: each component, containerd's shims, and each pod.

``python -m trading_dev.cluster.measure`` while ``make cluster`` runs. Components and shims are
read from ``/proc/PID/status`` (VmRSS); pods from their cgroup (v1 ``memory.stat``:
``total_rss`` + ``total_mapped_file``, the pages the pod's processes have resident).
"""

from __future__ import annotations

import pathlib
import sys

from trading_dev.cluster import cleanup


def rss_kib(pid: int) -> int:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def components() -> dict[str, int]:
    found = {name: rss_kib(pid) for name, pid in cleanup.read_pids().items()}
    shims = [pid for pid in cleanup.stray_processes() if pid not in cleanup.read_pids().values()]
    found["containerd shims"] = sum(rss_kib(pid) for pid in shims)
    return found


def pods() -> dict[str, int]:
    """Resident KiB per pod cgroup, named by the pod UID's cgroup directory."""
    base = cleanup.CGROUP_FS / "memory" / cleanup.CGROUP_ROOT / "kubepods"
    found: dict[str, int] = {}
    for stat in base.rglob("memory.stat"):
        pod_dir = stat.parent
        if not pod_dir.name.startswith("pod"):
            continue
        values = dict(line.split() for line in stat.read_text().splitlines())
        found[pod_dir.name] = (int(values.get("total_rss", 0)) + int(values.get("total_mapped_file", 0))) // 1024
    return found


def pod_names() -> dict[str, str]:
    """``namespace/name`` of each pod by its cgroup directory name (``pod<uid>``), from the API server."""
    import json
    import subprocess

    from trading_dev.controlplane import build

    proc = subprocess.run([str(build.binary_path("kubectl", build.node_version())),
                           f"--kubeconfig={cleanup.STATE_DIR / 'kubeconfig'}", "get", "pods", "-A", "-o", "json"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return {}
    return {f"pod{p['metadata']['uid']}": f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in json.loads(proc.stdout)["items"]}


def table() -> str:
    """Resident memory of every component, then of every pod (by name), in MiB."""
    lines = [f"{'component':50s} RSS MiB"]
    lines += [f"{name:50s} {kib / 1024:7.1f}" for name, kib in components().items()]
    names = pod_names()
    lines.append(f"{'pod':50s} RSS MiB")
    lines += [f"{names.get(name, name):50s} {kib / 1024:7.1f}"
              for name, kib in sorted(pods().items(), key=lambda item: names.get(item[0], item[0]))]
    return "\n".join(lines)


def main() -> int:
    import argparse

    argparse.ArgumentParser(prog="python -m trading_dev.cluster.measure",
                            description="Resident memory of each cluster component and pod of the running "
                                        "`make cluster`.").parse_args()
    if not cleanup.PIDS_FILE.exists():
        print("no cluster is running (make cluster)", file=sys.stderr)
        return 1
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
