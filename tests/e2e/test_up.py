"""The README's first screen, run as written: ``make up``, the examples applied, the session halted and
resumed with the plugin, ``make down``; the playground cleans up after itself.

The lines come from the README's fenced block marked ``first-screen``, in order. ``git clone ... && cd``
is this checkout; ``make up`` / ``make down`` run their Makefile recipes (``python -m trading_dev.up``
[``--down``], checked against the Makefile; ``make`` itself would first install whatever is missing,
which ``make test`` has just done); ``export`` sets the environment of the lines after it; every other
line runs verbatim in bash and must exit 0. Between lines the test waits, as a reader would, for what
the previous one started: the session reconciled before the first ``status``, its workers up before
``halt``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
KUBECONFIG = ROOT / ".dev" / "kubeconfig"
BLOCK = re.compile(r"<!-- first-screen:[^>]*-->\n```sh\n(.*?)```", re.S)


def first_screen() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = BLOCK.search(readme)
    assert block, "README.md has no first-screen block"
    assert readme.index(block.group(0)) < 4000, "the block is not on the README's first screen"
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in block.group(1).splitlines() if line.strip()]


def test_makefile_recipes_are_what_the_test_runs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up: deps\n\t\$\(PY\) -m trading_dev\.up \$\(UP_ARGS\)$", makefile, re.M)
    assert re.search(r"^down: pydeps\n\t\$\(PY\) -m trading_dev\.up --down$", makefile, re.M)


def _session(env: dict[str, str]) -> dict[str, Any]:
    got = subprocess.run(["kubectl", "get", "ts", "demo", "-o", "json"], capture_output=True, text=True, env=env)
    return json.loads(got.stdout or "{}")


def _wait(what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_readme_first_screen_from_make_up_to_a_resumed_halt_and_make_down() -> None:
    lines = first_screen()
    assert lines[0].startswith("git clone ") and lines[0].endswith("&& cd trading-platform")
    assert lines[1] == "make up" and lines[-1] == "make down"
    assert not (ROOT / ".dev" / "up.pid").exists(), "a platform is already up on this checkout"
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    up: subprocess.Popen[str] | None = None
    outputs: list[tuple[str, str]] = []
    reconciled = False
    try:
        for line in lines[1:]:
            if line == "make up":
                up = subprocess.Popen([sys.executable, "-m", "trading_dev.up"], cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True)
                said = []
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    said.append(up.stdout.readline() if up.stdout else "")
                    if said[-1].startswith("ready in") or up.poll() is not None:
                        break
                assert said[-1].startswith("ready in"), "".join(said)
                continue
            if line == "make down":
                down = subprocess.run([sys.executable, "-m", "trading_dev.up", "--down"], cwd=ROOT,
                                      capture_output=True, text=True, timeout=90)
                assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
                continue
            export = re.fullmatch(r"export (\w+)=(.*)", line)
            if export:
                env[export.group(1)] = export.group(2).replace("$PWD", str(ROOT))
                continue
            if line.startswith("plugin/kubectl-trading status") and not reconciled:
                _wait("the operator to reconcile the example session", lambda: (_session(env).get("status") or {})
                      .get("phase"), 90)
                reconciled = True
            if line.startswith("plugin/kubectl-trading halt"):
                def workers_up() -> bool:
                    conditions = (_session(env).get("status") or {}).get("conditions") or []
                    return any(c["type"] == "WorkersAvailable" and c["status"] == "True" for c in conditions)
                _wait("the session's workers", workers_up, 120)
            ran = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            assert ran.returncode == 0, f"{line}\n{ran.stdout}{ran.stderr}"
            outputs.append((line, ran.stdout))
        ran_lines = [line for line, _ in outputs]
        assert ran_lines == [line for line in lines[2:-1] if not line.startswith("export ")]
        statuses = [out for line, out in outputs if line.startswith("plugin/kubectl-trading status")]
        assert len(statuses) == 2 and all("TradingSession default/demo" in out for out in statuses)
        halt_at = next(i for i, line in enumerate(ran_lines) if line.startswith("plugin/kubectl-trading halt"))
        assert "trying it" in ran_lines[halt_at]
        after_halt = outputs[halt_at + 1][1]
        assert "by User" in after_halt and "trying it" in after_halt, after_halt
        assert ran_lines[halt_at + 2].startswith("plugin/kubectl-trading resume")
        resumed = outputs[halt_at + 2][1]
        assert re.search(r"halt h-\w+ cleared", resumed), resumed
        assert up is not None and up.wait(timeout=30) == 0
        assert not KUBECONFIG.exists() and not (ROOT / ".dev" / "up.pid").exists()
    finally:
        if up is not None and up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
            up.wait(timeout=30)
