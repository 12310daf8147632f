"""``make cluster`` / ``make cluster-api`` publish ``.dev/kubeconfig`` while they run and remove it when
they stop (README: "Ctrl-C stops it and removes everything it made"); a file replaced meanwhile stays."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from trading_dev import kubeconfig

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_published_is_removed_unless_replaced(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "admin.kubeconfig"
    source.write_text("apiVersion: v1\nkind: Config\n")
    target = tmp_path / ".dev" / "kubeconfig"
    with kubeconfig.published(source, target):
        assert target.read_text() == source.read_text()
    assert not target.exists()
    with kubeconfig.published(source, target):
        target.write_text("someone else's\n")
    assert target.read_text() == "someone else's\n"


@pytest.mark.cluster
def test_ctrl_c_on_cluster_api_removes_its_kubeconfig(tmp_path: pathlib.Path) -> None:
    target = tmp_path / ".dev" / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "trading_dev.controlplane", "--kubeconfig", str(target)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 180
        while not target.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no kubeconfig within 180 s"
            time.sleep(0.2)
        assert "kind: Config" in target.read_text() or "clusters" in target.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not target.exists(), "the kubeconfig of a stopped control plane was left behind"


@pytest.mark.cluster
def test_the_local_platform_removes_its_kubeconfig_when_it_stops(tmp_path: pathlib.Path) -> None:
    """``make up`` / ``make demo --runtime=process``: the same promise for the platform they run."""
    from trading_dev.platform import LocalPlatform

    target = tmp_path / ".dev" / "kubeconfig"
    with LocalPlatform(tmp_path / "platform", kubeconfig_out=target) as platform:
        assert target.read_bytes() == platform.cp.kubeconfig_path.read_bytes()
    assert not target.exists()
