"""Remove everything a real cluster leaves on the machine, whether it stopped or crashed.

Teardown and crash recovery are the same code: ``make cluster`` runs it when it
stops and again before it starts, so a cluster killed by SIGKILL (or a power
cut of the test run) leaves nothing the next start cannot clean. What it
removes, and how it recognises it as ours:

- processes: the recorded pids whose command line still names our directories,
  and containerd shims that serve our containerd socket;
- containers' processes: every task in our cgroup subtree (``CGROUP_ROOT``),
  then the cgroups themselves, deepest first;
- mounts under our state and run directories (volumes, overlay root
  filesystems, the kubelet's shared bind mount), deepest first;
- pod network namespaces that containerd made (``/run/netns/cni-*``) and our
  own network namespace (its veth pair, bridge and iptables rules go with it);
- kubelet's log symlinks in ``/var/log/containers`` that point into our
  directories, then the directories themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

from trading_dev.cluster import network

STATE_DIR = pathlib.Path("/var/lib/trading-platform/cluster")
RUN_DIR = pathlib.Path("/run/trading-platform/cluster")
CGROUP_ROOT = "trading-platform"
CGROUP_FS = pathlib.Path("/sys/fs/cgroup")
PIDS_FILE = RUN_DIR / "pids.json"


def record_pid(name: str, pid: int) -> None:
    pids = read_pids()
    pids[name] = pid
    PIDS_FILE.write_text(json.dumps(pids))


def read_pids() -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads(PIDS_FILE.read_text()).items()}
    except (OSError, ValueError):
        return {}


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ours(cmdline: str) -> bool:
    return str(STATE_DIR) in cmdline or str(RUN_DIR) in cmdline


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pathlib.Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.05)


def stray_processes() -> list[int]:
    """Our recorded components still alive, and containerd shims serving our socket."""
    found = [pid for pid in read_pids().values() if _ours(_cmdline(pid))]
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = _cmdline(int(entry.name))
            if "containerd-shim" in cmd and _ours(cmd):
                found.append(int(entry.name))
    return sorted(set(found))


def _cgroup_dirs() -> list[pathlib.Path]:
    """Our cgroup directories in every v1 hierarchy (and the unified one), deepest first."""
    dirs: list[pathlib.Path] = []
    if not CGROUP_FS.exists():
        return dirs
    for hierarchy in CGROUP_FS.iterdir():
        root = hierarchy / CGROUP_ROOT
        if root.is_dir():
            dirs += [pathlib.Path(d) for d, _, _ in os.walk(root)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def kill_cgroup_tasks() -> None:
    for _ in range(20):
        pids: list[int] = []
        for d in _cgroup_dirs():
            for name in ("cgroup.procs", "tasks"):
                with contextlib.suppress(OSError, ValueError):
                    pids += [int(x) for x in (d / name).read_text().split()]
        if not pids:
            return
        # A frozen cgroup (a paused container) would keep its tasks: thaw before killing.
        for d in _cgroup_dirs():
            with contextlib.suppress(OSError):
                if (d / "freezer.state").exists():
                    (d / "freezer.state").write_text("THAWED")
        _kill(sorted(set(pids)))


def remove_cgroups() -> None:
    for d in _cgroup_dirs():
        with contextlib.suppress(OSError):
            d.rmdir()


def our_mounts() -> list[str]:
    """Mount points under our directories (and pod netns files), deepest first."""
    points: list[str] = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith((str(STATE_DIR) + "/", str(RUN_DIR) + "/")) or point in (str(STATE_DIR), str(RUN_DIR)):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all() -> None:
    for _ in range(5):
        points = our_mounts()
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True)


def remove_pod_netns() -> None:
    """containerd's pod network namespaces (one cluster per machine: every ``cni-*`` is a pod's)."""
    netns_dir = pathlib.Path("/run/netns")
    if not netns_dir.is_dir():
        return
    for entry in netns_dir.glob("cni-*"):
        subprocess.run(["umount", "-l", str(entry)], capture_output=True)
        with contextlib.suppress(OSError):
            entry.unlink()


def remove_log_links() -> None:
    links = pathlib.Path("/var/log/containers")
    if not links.is_dir():
        return
    for entry in links.iterdir():
        with contextlib.suppress(OSError):
            if entry.is_symlink() and os.readlink(entry).startswith(str(STATE_DIR)):
                entry.unlink()


def leftovers() -> list[str]:
    """What of a cluster is still on the machine (empty when clean); used by the tests."""
    found = [f"process {pid}: {_cmdline(pid)[:80]}" for pid in stray_processes()]
    found += [f"mount {m}" for m in our_mounts()]
    found += [f"cgroup {d}" for d in _cgroup_dirs()]
    if network.exists():
        found.append(f"network namespace {network.NETNS}")
    if subprocess.run(["ip", "link", "show", network.HOST_LINK], capture_output=True).returncode == 0:
        found.append(f"link {network.HOST_LINK}")
    found += [f"directory {d}" for d in (STATE_DIR, RUN_DIR) if d.exists()]
    return found


def clean() -> None:
    """Remove every trace of a cluster, running or crashed. Idempotent; the caller holds the lock."""
    _kill(stray_processes())
    kill_cgroup_tasks()
    unmount_all()
    remove_pod_netns()
    network.delete()
    remove_cgroups()
    remove_log_links()
    for d in (STATE_DIR, RUN_DIR):
        shutil.rmtree(d, ignore_errors=True)
