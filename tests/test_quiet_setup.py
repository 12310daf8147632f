"""Set-up is quiet and says what it does: `make`'s Python install sends pip's output to a log and prints
one line before (what, roughly how long, where the log is) and one after (how long it took), or the
log's tail when pip fails; the cached control-plane binaries print nothing (they used to print their
paths), and a cold build says what it builds, roughly how long it takes and how long it took."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from trading_dev.controlplane import build

NOISE = "WARNING: Running pip as the root user can result in broken permissions\nDEPRECATION: legacy editable\n"


# As a user's shell runs make: under `make test` the outer make's MAKELEVEL/MAKEFLAGS would turn
# "make:" into "make[1]:" in what the recipe prints.
_MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}


def _make_pydeps(tmp_path: pathlib.Path, pip_exit: int) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)  # an existing venv: only the install step runs
    pip = tmp_path / "pip"
    pip.write_text(f"#!/bin/sh\nprintf '{NOISE}'\nprintf 'ERROR: no matching distribution\\n' >&2\n"
                   f"[ {pip_exit} = 0 ] || exit {pip_exit}\nexit 0\n")
    pip.chmod(0o755)
    return subprocess.run(["make", "--no-print-directory", "pydeps", f"VENV={venv}", f"PIP={pip}"], cwd=ROOT,
                          env=_MAKE_ENV, capture_output=True, text=True, timeout=60)


def test_pip_output_goes_to_a_log_and_one_line_says_what_and_how_long(tmp_path: pathlib.Path) -> None:
    proc = _make_pydeps(tmp_path, 0)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "WARNING" not in out and "DEPRECATION" not in out and "ERROR" not in out, out
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("installing the pinned Python dependencies into") and "several minutes" in lines[0]
    assert f"log: {tmp_path / 'venv'}/install.log" in lines[0]
    assert lines[1].startswith("    Python dependencies installed in ") and lines[1].endswith("s")
    assert "WARNING: Running pip as the root user" in (tmp_path / "venv" / "install.log").read_text()
    again = subprocess.run(["make", "--no-print-directory", "pydeps", f"VENV={tmp_path / 'venv'}",
                            f"PIP={tmp_path / 'pip'}"], cwd=ROOT, env=_MAKE_ENV, capture_output=True, text=True,
                           timeout=60)
    said = (again.stdout + again.stderr).replace("make: Nothing to be done for 'pydeps'.\n", "")
    assert again.returncode == 0 and said == "", "installed already: nothing to say"


def test_a_failing_pip_shows_its_log(tmp_path: pathlib.Path) -> None:
    proc = _make_pydeps(tmp_path, 3)
    assert proc.returncode != 0
    assert "ERROR: no matching distribution" in proc.stdout and "pip install failed" in proc.stdout, proc.stdout


def test_cached_control_plane_binaries_print_nothing() -> None:
    for flags in (["--all-supported"], ["--node"]):
        proc = subprocess.run([sys.executable, "-m", "trading_dev.controlplane.build", *flags], capture_output=True,
                              text=True, timeout=600, env=os.environ)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr


def test_a_cold_build_says_what_how_long_and_took(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRADING_DEV_CACHE", str(tmp_path))

    def fake_build(targets: dict[str, pathlib.Path], *_: object) -> None:  # `go build`, minus the minutes
        for target in targets.values():
            target.write_text("binary")

    monkeypatch.setattr(build, "_build_locked", fake_build)
    built = build._build_many({"kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver"}, "v1.37.2",
                              "k8s.io/kubernetes", True)
    lines = capsys.readouterr().out.splitlines()
    assert built["kube-apiserver"].exists()
    assert len(lines) == 2, lines
    assert lines[0].startswith("building kube-apiserver v1.37.2 from Go modules (the first time only: several minutes")
    assert f"log: {tmp_path}/build-kube-apiserver-v1.37.2.log" in lines[0]
    assert lines[1].startswith("    built kube-apiserver v1.37.2 in ")
    build._build_many({"kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver"}, "v1.37.2", "k8s.io/kubernetes", True)
    assert capsys.readouterr().out == "", "cached: nothing to say"


def test_deps_removes_the_go_build_cache_once_every_binary_is_built(tmp_path: pathlib.Path) -> None:
    """The Go builds' cache (6-8 GB) goes once their binaries are cached: the real node's images need the disk."""
    cache = tmp_path / "go-build"
    cache.mkdir()
    (cache / "entry").write_bytes(b"x" * 1024)
    proc = subprocess.run(["make", "--no-print-directory", "deps", f"GOCACHE={cache}"], cwd=ROOT, env=_MAKE_ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not cache.exists()
    probe = subprocess.run(["make", "--no-print-directory", "-s", "-f", "-", "show"], cwd=ROOT, env=_MAKE_ENV,
                           input="include Makefile\nshow:\n\t@echo $$GOCACHE\n", capture_output=True, text=True)
    assert probe.stdout.strip().endswith("trading-platform/go-build"), "the builds' own cache, not the user's"
