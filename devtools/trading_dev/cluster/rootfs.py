"""The operator and workers images, built here the way ``docker/*.Dockerfile`` builds them.

No Docker and no registry: a Debian root filesystem from ``debootstrap`` (the
same Python 3.11 as ``python:3.11-slim``), a venv at ``/opt/venv`` with the
pinned requirements (``requirements.lock``), the non-root user 10001, and the
Dockerfiles' ENV, USER and ENTRYPOINT. Each image is cached as a docker archive
keyed by everything that went into it (base packages, wheels, the project's
sources, the config), so a warm machine rebuilds nothing.

Wheels are fetched on the host with the venv's pip (its certificates and
settings), into a wheelhouse keyed by the list of pins; the chroot installs
from it with ``--no-index``, so nothing inside the chroot reaches a network.

torch: PyPI carries only the CUDA build of torch for Linux, and that build does
not import without its CUDA libraries even on a machine without a GPU (tried:
``libcublasLt.so.*[0-9] not found`` at ``import torch``). The CPU-only build lives
outside PyPI. So the workers image carries torch with its CUDA packages, exactly
as the Dockerfile's does; the inference worker falls back to the CPU at run time
(``docs/decisions/0007-images-without-a-registry.md``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from trading_dev.cluster import oci
from trading_dev.controlplane import build

ROOT = pathlib.Path(__file__).resolve().parents[3]
SUITE = "bookworm"
# python:3.11-slim's contents that the images use, and pg_dump/pg_restore for the Backup Jobs.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "postgresql-client")
UID = 10001
ENV = ["PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"]
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt",
        "var/lib/apt/lists", "var/cache/debconf", "var/log")


class ImageBuildError(RuntimeError):
    """An image could not be built; the message has the failing step's output."""


@dataclass(frozen=True)
class ImageSpec:
    """One image as its Dockerfile defines it."""

    name: str
    reference: str
    extras: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    ports: tuple[int, ...]


def _version() -> str:
    chart = (ROOT / "charts" / "trading-platform" / "Chart.yaml").read_text()
    match = re.search(r"^appVersion:\s*\"?([^\"\n]+)\"?", chart, re.M)
    return match.group(1).strip() if match else "0.1.0"


def specs() -> dict[str, ImageSpec]:
    tag = _version()
    return {
        "operator": ImageSpec("operator", f"trading-platform/operator:{tag}", (),
                              ("python", "-m", "trading_operator"), (), (8080, 8081)),
        "workers": ImageSpec("workers", f"trading-platform/workers:{tag}", ("ml",),
                             ("trading-platform",), ("--help",), (8080,)),
    }


def _say(message: str) -> None:
    print(f"[images] {message}", flush=True)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ImageBuildError(f"{what} failed (`{' '.join(cmd[:6])} ...`):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------- the pinned requirements

def pins(extras: tuple[str, ...], python: str) -> dict[str, str]:
    """The project's dependency closure for ``extras`` with the versions of requirements.lock.

    Walked from the installed project's metadata, markers evaluated for the image's Python
    (``python``, e.g. 3.11.2: Debian's, older than the host's), so it is exactly what
    ``pip install -c requirements.lock .[extras]`` resolves there; a dependency missing from
    the lock is an error.
    """
    lock: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            lock[canonicalize_name(name.strip())] = version.split(";")[0].strip()
    environment = {"python_full_version": python, "python_version": ".".join(python.split(".")[:2])}
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("trading-platform", frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            requires = []  # not installed on the host (its Python needs no such package): a leaf
        for text in requires:
            req = Requirement(text)
            dep = canonicalize_name(req.name)
            if req.marker and not any(req.marker.evaluate({**environment, "extra": e}) for e in (wanted or {""})):
                continue
            if dep not in lock and dep != "setuptools":
                raise ImageBuildError(f"{dep} (needed by {name} on Python {python}) is not pinned in requirements.lock")
            # pip freeze leaves setuptools out of the lock: take what the venv installed with it.
            found[dep] = lock.get(dep) or importlib.metadata.version(dep)
            todo.append((dep, frozenset(req.extras)))
    return dict(sorted(found.items()))


def image_python(root: pathlib.Path) -> str:
    """The Python version of a root filesystem (Debian's python3)."""
    return _run(["chroot", str(root), "python3", "-c", "import platform; print(platform.python_version())"],
                "reading the image's Python version", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).strip()


def _wheelhouse_path(extras: tuple[str, ...], python: str) -> tuple[pathlib.Path, dict[str, str]]:
    wanted = pins(extras, python)
    listing = "".join(f"{n}=={v}\n" for n, v in wanted.items())
    return build.cache_dir() / "wheels" / _key(listing, python), wanted


def wheelhouse(extras: tuple[str, ...], python: str) -> pathlib.Path:
    """The pinned wheels of ``extras`` for the image's Python, fetched on the host."""
    house, wanted = _wheelhouse_path(extras, python)
    listing = "".join(f"{n}=={v}\n" for n, v in wanted.items())
    if (house / ".complete").exists():
        return house
    house.mkdir(parents=True, exist_ok=True)
    (house / "requirements.txt").write_text(listing)
    _say(f"wheels: {len(wanted)} pinned packages into {house}")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(house),
          "-r", str(house / "requirements.txt")], "fetching the pinned wheels")
    (house / ".complete").write_text("")
    return house


def project_wheel(out: pathlib.Path) -> pathlib.Path:
    """The project itself as a wheel (what ``pip install .`` installs in the Dockerfiles)."""
    with tempfile.TemporaryDirectory(prefix="project-src-") as tmp:
        src = pathlib.Path(tmp)
        for item in ("pyproject.toml", "requirements.lock"):
            shutil.copy(ROOT / item, src / item)
        for item in ("operator", "workers", "devtools"):
            shutil.copytree(ROOT / item, src / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
              "--wheel-dir", str(out), str(src)], "building the project's wheel")
    return next(out.glob("trading_platform-*.whl"))


def sources_digest() -> str:
    """A hash of what the project's wheel is built from (the Dockerfiles' COPY lines)."""
    digest = hashlib.sha256()
    for item in ("pyproject.toml", "requirements.lock", "operator", "workers", "devtools"):
        path = ROOT / item
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            and not p.name.endswith(".pyc") and ".egg-info" not in str(p))
        for f in files:
            digest.update(str(f.relative_to(ROOT)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------- the root filesystem

def _mirror() -> str:
    """The machine's own Debian mirror, read from its apt sources (never written into the repo)."""
    sources = pathlib.Path("/etc/apt/sources.list.d")
    texts = [p.read_text() for p in sorted(sources.glob("*.sources"))] if sources.is_dir() else []
    for text in texts:
        for stanza in text.split("\n\n"):
            if re.search(rf"^Suites:.*\b{SUITE}\b", stanza, re.M) and "security" not in stanza:
                match = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if match:
                    return match.group(1)
    legacy = pathlib.Path("/etc/apt/sources.list")
    if legacy.exists():
        match = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", legacy.read_text(), re.M)
        if match:
            return match.group(1)
    raise ImageBuildError(f"no Debian {SUITE} mirror found in the machine's apt sources")


def _base_path(packages: tuple[str, ...]) -> pathlib.Path:
    return build.cache_dir() / "rootfs" / f"{SUITE}-{_key(SUITE, *packages, _mirror(), build.RECIPE)}"


def base_rootfs(packages: tuple[str, ...] = BASE_PACKAGES) -> pathlib.Path:
    """A minimal Debian with ``packages`` (debootstrap), cached by suite, packages and mirror."""
    base = _base_path(packages)
    mirror = _mirror()
    if (base / ".complete").exists():
        return base
    shutil.rmtree(base, ignore_errors=True)
    base.parent.mkdir(parents=True, exist_ok=True)
    _say(f"debootstrap {SUITE} ({', '.join(packages)}); about a minute")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(base), mirror],
         "debootstrap")
    for path in TRIM:
        shutil.rmtree(base / path, ignore_errors=True)
        (base / path).mkdir(parents=True, exist_ok=True)
    (base / ".complete").write_text("")
    return base


def _add_user(root: pathlib.Path) -> None:
    """The Dockerfiles' `useradd --uid 10001 ... trading` (no home, no login shell)."""
    with open(root / "etc" / "group", "a") as fh:
        fh.write(f"trading:x:{UID}:\n")
    with open(root / "etc" / "passwd", "a") as fh:
        fh.write(f"trading:x:{UID}:{UID}::/nonexistent:/usr/sbin/nologin\n")


def _image_path(name: str, base: pathlib.Path, house: pathlib.Path) -> tuple[pathlib.Path, oci.ImageConfig]:
    spec = specs()[name]
    config = oci.ImageConfig(entrypoint=list(spec.entrypoint), cmd=list(spec.cmd), user=f"{UID}:{UID}",
                             env=ENV, exposed_ports=list(spec.ports))
    key = _key(base.name, house.name, sources_digest(), json.dumps(config.__dict__, sort_keys=True),
               spec.reference, build.RECIPE)
    return images_dir() / f"{name}-{key}.tar", config


def _services_path(base: pathlib.Path) -> tuple[pathlib.Path, oci.ImageConfig]:
    config = oci.ImageConfig(user=f"{UID}:{UID}", env=ENV, exposed_ports=[5432, 6379])
    key = _key(base.name, POSTGRES_ENTRYPOINT, json.dumps(config.__dict__, sort_keys=True), SERVICES_IMAGE,
               build.RECIPE)
    return images_dir() / f"services-{key}.tar", config


def archive_cached(name: str) -> bool:
    """Whether image ``name`` (operator, workers, services) is already built for the current inputs."""
    base = _base_path(SERVICES_PACKAGES if name == "services" else BASE_PACKAGES)
    if not (base / ".complete").exists():
        return False
    if name == "services":
        return _services_path(base)[0].exists()
    house, _ = _wheelhouse_path(specs()[name].extras, image_python(base))
    return (house / ".complete").exists() and _image_path(name, base, house)[0].exists()


def image_archive(name: str) -> pathlib.Path:
    """Build (or find cached) the docker archive of image ``name`` (``operator`` or ``workers``)."""
    spec = specs()[name]
    base = base_rootfs()
    python = image_python(base)
    house = wheelhouse(spec.extras, python)
    out, config = _image_path(name, base, house)
    if out.exists():
        return _used(out)
    _say(f"{spec.reference}: root filesystem, venv with {len(pins(spec.extras, python))} pinned packages")
    with tempfile.TemporaryDirectory(prefix=f"image-{name}-", dir=build.cache_dir()) as tmp:
        root = pathlib.Path(tmp) / "rootfs"
        _run(["cp", "-a", str(base), str(root)], "copying the base root filesystem")
        (root / ".complete").unlink(missing_ok=True)
        wheels = root / "tmp" / "wheels"
        shutil.copytree(house, wheels)
        project_wheel(wheels)
        chroot_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                      "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        _run(["chroot", str(root), "python3", "-m", "venv", "/opt/venv"], "python3 -m venv", env=chroot_env)
        project = next(wheels.glob("trading_platform-*.whl")).name
        _run(["chroot", str(root), "/opt/venv/bin/pip", "install", "-q", "--no-index", "--no-deps",
              "--find-links", "/tmp/wheels", "-r", "/tmp/wheels/requirements.txt", f"/tmp/wheels/{project}"],
             "pip install in the chroot", env=chroot_env)
        shutil.rmtree(wheels)
        _add_user(root)
        for path in ("root/.cache", "var/log"):
            shutil.rmtree(root / path, ignore_errors=True)
        oci.archive_from_dir(root, config, spec.reference, out)
    _prune(name, keep=out)
    return out


# An archive not built or used for this long is removed when another of the same image is built; of the
# younger ones, at most KEEP_RECENT are kept (a workers archive is 6 GB: the disk must not fill up).
PRUNE_AFTER_SECONDS = 30 * 60
KEEP_RECENT = 2


def _used(out: pathlib.Path) -> pathlib.Path:
    """A cache hit: mark the archive used now, so that another checkout's build does not prune it."""
    os.utime(out)
    return out


def _prune(name: str, keep: pathlib.Path) -> None:
    """Older archives of the same image (the workers image is several GB), but the ``KEEP_RECENT`` newest
    built or used within ``PRUNE_AFTER_SECONDS``: another checkout of the project (another branch, another
    worktree) may be about to load its own, and on a shared machine removing it under that run made its
    load fail."""
    now = time.time()
    others = []
    for old in images_dir().glob(f"{name}-*.tar"):
        with contextlib.suppress(FileNotFoundError):
            if old != keep:
                others.append((old.stat().st_mtime, old))
    others.sort(reverse=True)
    for rank, (mtime, old) in enumerate(others):
        if rank >= KEEP_RECENT or now - mtime > PRUNE_AFTER_SECONDS:
            old.unlink(missing_ok=True)


# ---------------------------------------------------------------------- Redis and PostgreSQL

SERVICES_PACKAGES = ("redis-server", "postgresql-15")
SERVICES_IMAGE = "trading.dev/services:bookworm"
# PostgreSQL as an unprivileged user in an empty data directory: initdb on first start, a
# `trading` superuser and database, trust auth (the chart's default DSN has no password).
POSTGRES_ENTRYPOINT = """#!/bin/sh
set -eu
bin=/usr/lib/postgresql/15/bin
data="${PGDATA:-/var/lib/postgresql/data}/pgdata"
if [ ! -s "$data/PG_VERSION" ]; then
  "$bin/initdb" -D "$data" -U trading --auth=trust >/dev/null
  echo "listen_addresses = '*'" >> "$data/postgresql.conf"
  echo "unix_socket_directories = '/tmp'" >> "$data/postgresql.conf"
  echo "host all all 0.0.0.0/0 trust" >> "$data/pg_hba.conf"
  "$bin/pg_ctl" -D "$data" -w -o "-c listen_addresses=''" start >/dev/null
  "$bin/createdb" -h /tmp -U trading trading
  "$bin/pg_ctl" -D "$data" -w stop >/dev/null
fi
exec "$bin/postgres" -D "$data"
"""


def services_archive() -> pathlib.Path:
    """Redis and PostgreSQL from Debian's packages, one image (entrypoints chosen by the pod)."""
    base = base_rootfs(SERVICES_PACKAGES)
    out, config = _services_path(base)
    if out.exists():
        return _used(out)
    _say(f"{SERVICES_IMAGE}: Redis and PostgreSQL from Debian's packages")
    with tempfile.TemporaryDirectory(prefix="image-services-", dir=build.cache_dir()) as tmp:
        root = pathlib.Path(tmp) / "rootfs"
        _run(["cp", "-a", str(base), str(root)], "copying the base root filesystem")
        (root / ".complete").unlink(missing_ok=True)
        entry = root / "usr" / "local" / "bin" / "postgres-entrypoint"
        entry.write_text(POSTGRES_ENTRYPOINT)
        entry.chmod(0o755)
        _add_user(root)
        oci.archive_from_dir(root, config, SERVICES_IMAGE, out)
    _prune("services", keep=out)
    return out


def images_dir() -> pathlib.Path:
    path = build.cache_dir() / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build the operator and workers images (cached).")
    parser.add_argument("names", nargs="*", default=["operator", "workers", "services"])
    args = parser.parse_args(argv)
    for name in args.names:
        started = time.monotonic()
        try:
            out = services_archive() if name == "services" else image_archive(name)
        except ImageBuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        size = os.path.getsize(out) / 1e6
        _say(f"{name}: {out} ({size:.0f} MB) in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
