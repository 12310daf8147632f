"""``--help`` on every entry point prints its usage and exits 0, without starting anything.

The entry points are found, not listed: every module of the four Python trees (operator, workers,
devtools, benchmarks) with a ``__main__`` guard or a ``__main__.py``, every script in hack/, and the
kubectl plugin with each of its commands, plus the workers' console script's subcommands. A new
entry point is covered by being written.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

#: where to look, and the folder module names are relative to
TREES = ((ROOT / "operator", ROOT / "operator"), (ROOT / "workers", ROOT / "workers"),
         (ROOT / "devtools", ROOT / "devtools"), (ROOT / "benchmarks", ROOT))
GUARD = re.compile(r"""^if __name__ == ["']__main__["']:""", re.M)
PLUGIN = ROOT / "plugin" / "kubectl-trading"


def plugin_commands() -> list[str]:
    """The plugin's commands, as its own usage line lists them (so a new one is covered too)."""
    usage = subprocess.run([str(PLUGIN), "--help"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"\{([a-z,-]+)\}", usage)
    assert found, usage
    return found.group(1).split(",")


PLUGIN_COMMANDS = plugin_commands()


def modules() -> list[str]:
    found = []
    for top, base in TREES:
        for path in sorted(top.rglob("*.py")):
            if "tests" in path.relative_to(ROOT).parts:
                continue
            if path.name == "__main__.py":
                found.append(".".join(path.parent.relative_to(base).parts))
            elif GUARD.search(path.read_text()):
                found.append(".".join(path.with_suffix("").relative_to(base).parts))
    return found


MODULES = modules()
COMMANDS = ([[sys.executable, "-m", m, "--help"] for m in MODULES]
            + [[sys.executable, str(p), "--help"] for p in sorted((ROOT / "hack").glob("*.py"))]
            + [[str(PLUGIN), "--help"]] + [[str(PLUGIN), c, "--help"] for c in PLUGIN_COMMANDS]
            + [[sys.executable, "-m", "trading_workers.cli", c, "--help"] for c in ("worker", "backup")])


def test_the_entry_points_named_in_the_readme_and_issues_are_found() -> None:
    assert {"status", "halt", "resume", "suspend", "kill-switch", "backup", "report"} <= set(PLUGIN_COMMANDS)
    for m in ("trading_operator", "trading_workers.cli", "trading_dev.up", "trading_dev.demo", "trading_dev.platform",
              "trading_dev.cluster", "trading_dev.controlplane", "benchmarks", "benchmarks.chaos"):
        assert m in MODULES, m


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: " ".join(pathlib.Path(a).name for a in argv[1:]))
def test_help_prints_usage_and_exits_0(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.lstrip().lower().startswith("usage:"), proc.stdout[:500] + proc.stderr[-2000:]
