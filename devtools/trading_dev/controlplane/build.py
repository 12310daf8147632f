"""Build kube-apiserver and etcd from Go modules and cache the binaries.

Why build instead of download: this machine reaches only package registries,
and the Go module proxy carries the Kubernetes and etcd sources. The
binaries are cached outside the repository, keyed by version, so a warm
machine pays the build once.

``k8s.io/kubernetes`` is not meant to be consumed as a module: its go.mod
points every ``k8s.io/*`` staging module at ``./staging/src/...``. We read
those ``replace`` lines from the published go.mod and re-point each one at
the published staging module of the matching version (v1.X.Y -> v0.X.Y),
so no replace line is typed by hand.

Runs with the standard library only, so it works before the project's
Python dependencies are installed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

KUBERNETES_VERSION = "v1.33.13"
ETCD_VERSION = "v3.5.35"
# Bump when the build recipe changes, so a cached binary built the old way is not reused.
RECIPE = "r2"


class BuildError(RuntimeError):
    """The control-plane binaries could not be built; the message says why."""


def cache_dir() -> pathlib.Path:
    base = os.environ.get("TRADING_DEV_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "trading-platform"
    )
    return pathlib.Path(base)


def binary_path(name: str, version: str) -> pathlib.Path:
    return cache_dir() / "bin" / f"{name}-{version}-{RECIPE}"


def kube_apiserver_path() -> pathlib.Path:
    return binary_path("kube-apiserver", KUBERNETES_VERSION)


def etcd_path() -> pathlib.Path:
    return binary_path("etcd", ETCD_VERSION)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        for candidate in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
            if os.path.exists(candidate):
                return candidate
        raise BuildError(
            "the Go toolchain was not found on PATH; install Go (1.24 or newer) "
            "to build kube-apiserver and etcd"
        )
    return go


def _run(cmd: list[str], cwd: pathlib.Path, log: pathlib.Path) -> str:
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=fh, text=True)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise BuildError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); last output:\n{tail}")
    return proc.stdout


def staging_replaces(kubernetes_gomod: str, version: str) -> dict[str, str]:
    """Map each staging module replaced by a local path to its published version."""
    staging_version = "v0." + version.removeprefix("v1.")
    replaces: dict[str, str] = {}
    for match in re.finditer(r"^\s*(k8s\.io/[\w.\-/]+)\s*=>\s*\./staging/\S+", kubernetes_gomod, re.M):
        replaces[match.group(1)] = staging_version
    if not replaces:
        raise BuildError("no staging replace lines found in the kubernetes go.mod")
    return replaces


def _version_ldflags(version: str) -> str:
    """Stamp kube-apiserver's version the way the Kubernetes Makefile does (clients read /version)."""
    major, minor = version.removeprefix("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    stamps = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return " ".join(f"-X {pkg}.{k}={v}" for k, v in stamps.items())


def _build_module(name: str, version: str, module: str, package: str, extra_replaces: bool) -> pathlib.Path:
    target = binary_path(name, version)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time per binary: concurrent test sessions wait for the first one.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        return _build_locked(target, name, version, module, package, extra_replaces)


def _build_locked(target: pathlib.Path, name: str, version: str, module: str, package: str,
                  extra_replaces: bool) -> pathlib.Path:
    go = _go()
    log = cache_dir() / f"build-{name}-{version}.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix=f"build-{name}-") as tmp:
        work = pathlib.Path(tmp)
        _run([go, "mod", "init", f"trading.dev/build/{name}"], work, log)
        if extra_replaces:
            info = json.loads(_run([go, "mod", "download", "-json", f"{module}@{version}"], work, log))
            gomod = pathlib.Path(info["GoMod"]).read_text()
            for mod, ver in sorted(staging_replaces(gomod, version).items()):
                _run([go, "mod", "edit", f"-replace={mod}={mod}@{ver}"], work, log)
        _run([go, "mod", "edit", f"-require={module}@{version}"], work, log)
        (work / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{package}"\n')
        _run([go, "mod", "tidy"], work, log)
        partial = target.parent / (target.name + ".partial")
        ldflags = "-s -w" + (" " + _version_ldflags(version) if extra_replaces else "")
        _run([go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(partial), package], work, log)
        partial.rename(target)
    return target


def build_etcd() -> pathlib.Path:
    return _build_module("etcd", ETCD_VERSION, "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3", False)


def build_kube_apiserver() -> pathlib.Path:
    return _build_module(
        "kube-apiserver",
        KUBERNETES_VERSION,
        "k8s.io/kubernetes",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        True,
    )


def ensure_binaries() -> tuple[pathlib.Path, pathlib.Path]:
    """Return (kube-apiserver, etcd), building whichever is not cached yet."""
    return build_kube_apiserver(), build_etcd()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-paths", action="store_true", help="print the cached binary paths")
    args = parser.parse_args(argv)
    try:
        apiserver, etcd = ensure_binaries()
    except BuildError as exc:
        print(f"control-plane build failed: {exc}", file=sys.stderr)
        return 1
    if args.print_paths:
        print(apiserver)
        print(etcd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
