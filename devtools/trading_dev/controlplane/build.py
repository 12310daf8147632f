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
import time

# The supported Kubernetes minors (docs/decisions/0006-supported-kubernetes-and-a-real-node.md): the
# newest is the default control plane; the oldest is tested too (CRDs and chart on both ends).
KUBERNETES_NEWEST = "v1.37.2"
KUBERNETES_OLDEST = "v1.35.4"
SUPPORTED_VERSIONS = (KUBERNETES_OLDEST, KUBERNETES_NEWEST)
KUBERNETES_VERSION = os.environ.get("TRADING_DEV_KUBERNETES_VERSION") or KUBERNETES_NEWEST
# The real single-node cluster's version: see node_version().
KUBERNETES_NODE = KUBERNETES_NEWEST
ETCD_VERSION = "v3.6.16"
# The real node's DNS add-on (Services by name, as the chart and its helm test expect).
COREDNS_VERSION = "v1.15.0"
# The node components (kubelet, kube-controller-manager, kube-scheduler, kube-proxy), built from the
# same module as kube-apiserver, with a kubectl of the same version (the machine's may be minors behind).
NODE_COMPONENTS = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl")
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


def kube_apiserver_path(version: str = "") -> pathlib.Path:
    return binary_path("kube-apiserver", version or KUBERNETES_VERSION)


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
    return _build_many({name: package}, version, module, extra_replaces)[name]


def _build_many(packages: dict[str, str], version: str, module: str,
                extra_replaces: bool) -> dict[str, pathlib.Path]:
    """Build several main packages of one module in one ``go build`` (they share compiled packages)."""
    targets = {name: binary_path(name, version) for name in packages}
    if all(t.exists() for t in targets.values()):
        return targets
    first = next(iter(targets.values()))
    first.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time per set of binaries: concurrent test sessions wait for the first one.
    with open(first.parent / f".{first.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(t.exists() for t in targets.values()):
            return targets
        name = "+".join(packages)
        print(f"building {name} {version} from Go modules (the first time only: several minutes on two cores; "
              f"log: {cache_dir() / f'build-{name}-{version}.log'}) ...", flush=True)
        started = time.monotonic()
        _build_locked(targets, packages, version, module, extra_replaces)
        print(f"    built {name} {version} in {time.monotonic() - started:.0f}s", flush=True)
    return targets


def _build_locked(targets: dict[str, pathlib.Path], packages: dict[str, str], version: str, module: str,
                  extra_replaces: bool) -> None:
    go = _go()
    name = "+".join(packages)
    log = cache_dir() / f"build-{name}-{version}.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="build-") as tmp:
        work = pathlib.Path(tmp)
        _run([go, "mod", "init", f"trading.dev/build/{name}"], work, log)
        if extra_replaces:
            info = json.loads(_run([go, "mod", "download", "-json", f"{module}@{version}"], work, log))
            gomod = pathlib.Path(info["GoMod"]).read_text()
            for mod, ver in sorted(staging_replaces(gomod, version).items()):
                _run([go, "mod", "edit", f"-replace={mod}={mod}@{ver}"], work, log)
        _run([go, "mod", "edit", f"-require={module}@{version}"], work, log)
        imports = "".join(f'import _ "{pkg}"\n' for pkg in packages.values())
        (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\n{imports}")
        _run([go, "mod", "tidy"], work, log)
        out = work / "out"
        out.mkdir()
        ldflags = "-s -w" + (" " + _version_ldflags(version) if extra_replaces else "")
        # One package: `-o FILE`. Several: `go build -o DIR/` writes each command under the last element
        # of its import path (cmd/kubelet -> kubelet).
        single = len(packages) == 1
        dest = str(out / next(iter(packages))) if single else str(out) + "/"
        _run([go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", dest, *packages.values()], work, log)
        for binary, pkg in packages.items():
            partial = targets[binary].parent / (targets[binary].name + ".partial")
            shutil.move(str(out / (binary if single else pkg.rsplit("/", 1)[-1])), partial)
            partial.rename(targets[binary])


def build_etcd() -> pathlib.Path:
    return _build_module("etcd", ETCD_VERSION, "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3", False)


def build_kube_apiserver(version: str = "") -> pathlib.Path:
    return _build_module(
        "kube-apiserver",
        version or KUBERNETES_VERSION,
        "k8s.io/kubernetes",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        True,
    )


def build_coredns() -> pathlib.Path:
    return _build_module("coredns", COREDNS_VERSION, "github.com/coredns/coredns", "github.com/coredns/coredns", False)


def node_version() -> str:
    """The version of the real node's cluster (control plane and node components alike)."""
    return os.environ.get("TRADING_DEV_NODE_KUBERNETES_VERSION") or KUBERNETES_NODE


def build_node_components(version: str = "") -> dict[str, pathlib.Path]:
    """kubelet, kube-controller-manager, kube-scheduler, kube-proxy and kubectl of one version, in one build."""
    packages = {name: f"k8s.io/kubernetes/cmd/{name}" for name in NODE_COMPONENTS}
    return _build_many(packages, version or KUBERNETES_VERSION, "k8s.io/kubernetes", True)


def link_kubectl(version: str = "") -> pathlib.Path:
    """``<cache>/path/kubectl`` -> the built kubectl; the Makefile puts that directory first on PATH, so
    the tests and the demo use a kubectl of the server's version (the machine's may be minors behind)."""
    binary = build_node_components(version)["kubectl"]
    link_dir = cache_dir() / "path"
    link_dir.mkdir(parents=True, exist_ok=True)
    tmp = link_dir / f".kubectl.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(binary)
    tmp.rename(link_dir / "kubectl")
    return link_dir / "kubectl"


def ensure_binaries(version: str = "") -> tuple[pathlib.Path, pathlib.Path]:
    """Return (kube-apiserver, etcd), building whichever is not cached yet."""
    return build_kube_apiserver(version), build_etcd()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-paths", action="store_true", help="print the cached binary paths")
    parser.add_argument("--version", action="append", default=[],
                        help="a Kubernetes version to build (repeatable; default: the default version)")
    parser.add_argument("--all-supported", action="store_true",
                        help="kube-apiserver of every supported version (the oldest and the newest minor)")
    parser.add_argument("--node", action="store_true",
                        help="also the node components (kubelet, controller-manager, scheduler, proxy)")
    args = parser.parse_args(argv)
    versions = list(SUPPORTED_VERSIONS) if args.all_supported else (args.version or [KUBERNETES_VERSION])
    paths: list[pathlib.Path] = []
    try:
        for version in versions:
            paths += ensure_binaries(version)
        if args.node:
            paths += build_node_components(node_version()).values()
            paths.append(link_kubectl(node_version()))
            paths.append(build_coredns())
    except BuildError as exc:
        print(f"control-plane build failed: {exc}", file=sys.stderr)
        return 1
    if args.print_paths:
        for path in dict.fromkeys(paths):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
