"""``make up`` / ``make down``: the playground stays up, runs the examples by hand, and cleans up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
KUBECONFIG = ROOT / ".dev" / "kubeconfig"


def test_up_keeps_the_platform_for_the_examples_and_down_removes_its_files() -> None:
    assert not (ROOT / ".dev" / "up.pid").exists(), "a platform is already up on this checkout"
    proc = subprocess.Popen([sys.executable, "-m", "trading_dev.up"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            lines.append(line)
            if line.startswith("ready in") or proc.poll() is not None:
                break
        assert any(x.startswith("ready in") for x in lines), "".join(lines)
        kubectl = ["kubectl", f"--kubeconfig={KUBECONFIG}"]
        applied = subprocess.run([*kubectl, "apply", "-f", "examples/riskpolicy.yaml", "-f",
                                  "examples/session-simulated.yaml"], cwd=ROOT, capture_output=True, text=True)
        assert applied.returncode == 0, applied.stderr
        phase = ""
        while time.monotonic() < deadline and not phase:
            obj = json.loads(subprocess.run([*kubectl, "get", "ts", "demo", "-o", "json"], capture_output=True,
                                            text=True).stdout or "{}")
            phase = (obj.get("status") or {}).get("phase", "")
            time.sleep(0.5)
        assert phase, "the operator never reconciled the example session"
        status = subprocess.run([str(ROOT / "plugin" / "kubectl-trading"), "status", "demo",
                                 f"--kubeconfig={KUBECONFIG}"], capture_output=True, text=True)
        assert status.returncode == 0 and "TradingSession default/demo" in status.stdout, status.stderr
        down = subprocess.run([sys.executable, "-m", "trading_dev.up", "--down"], cwd=ROOT, capture_output=True,
                              text=True, timeout=90)
        assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
        assert proc.wait(timeout=30) == 0
        assert not KUBECONFIG.exists() and not (ROOT / ".dev" / "up.pid").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
