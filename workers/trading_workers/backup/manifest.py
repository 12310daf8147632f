"""The run directory and its manifest: what a backup wrote, and proof it is still what was written.

Every run writes ``<root>/<backup>/<run-id>/``: the artifacts, then
``manifest.json`` (every artifact's path, size and sha256, plus what the
targets observed at snapshot time, e.g. the journal's per-table row counts
and checksums), then ``manifest.json.sha256`` in ``sha256sum`` format. The
manifest is written last, so a directory without one is a run that never
finished. Its own sha256 also goes into the Backup's status, so a manifest
edited on the volume is caught even if its sidecar is edited too.

Why sha256 of every file rather than trusting the filesystem: backups sit
on volumes for weeks and are read back in an emergency; a silently
corrupted dump found during a restore is the worst time to find it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
FORMAT = 1
CHUNK = 1 << 20
_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4,8}$")


def new_run_id(now: dt.datetime, suffix: str) -> str:
    """Sortable, unique run id: ``20260102T030405Z-1a2b`` (also the directory name)."""
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + suffix


def is_run_id(name: str) -> bool:
    return bool(_RUN_ID.match(name))


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Artifact:
    path: str          # relative to the run directory, POSIX
    target: str        # journal | redis | models | resources
    size: int
    sha256: str

    @classmethod
    def of(cls, run_dir: pathlib.Path, path: pathlib.Path, target: str) -> Artifact:
        return cls(path=path.relative_to(run_dir).as_posix(), target=target, size=path.stat().st_size,
                   sha256=sha256_file(path))


@dataclass
class Manifest:
    backup: str                      # namespace/name
    session: str                     # namespace/name
    run: str
    started_at: dt.datetime
    completed_at: dt.datetime | None = None
    status: str = "Running"          # Completed | Failed
    error: str | None = None
    targets: list[str] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)   # per target: what it observed (journal tables, ...)

    @property
    def size(self) -> int:
        return sum(a.size for a in self.artifacts)

    def artifact(self, target: str, suffix: str = "") -> Artifact | None:
        return next((a for a in self.artifacts if a.target == target and a.path.endswith(suffix)), None)

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "backup": self.backup, "session": self.session, "run": self.run,
            "startedAt": self.started_at.isoformat(),
            "completedAt": self.completed_at.isoformat() if self.completed_at else None,
            "status": self.status, "error": self.error, "targets": self.targets,
            "sizeBytes": self.size,
            "artifacts": [{"path": a.path, "target": a.target, "size": a.size, "sha256": a.sha256}
                          for a in self.artifacts],
            "details": self.details,
        }, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        if raw.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {raw.get('format')!r}")
        return cls(backup=raw["backup"], session=raw["session"], run=raw["run"],
                   started_at=dt.datetime.fromisoformat(raw["startedAt"]),
                   completed_at=dt.datetime.fromisoformat(raw["completedAt"]) if raw.get("completedAt") else None,
                   status=raw["status"], error=raw.get("error"), targets=list(raw.get("targets") or []),
                   artifacts=[Artifact(a["path"], a["target"], int(a["size"]), a["sha256"]) for a in raw["artifacts"]],
                   details=dict(raw.get("details") or {}))


def write(run_dir: pathlib.Path, manifest: Manifest) -> str:
    """Write the manifest and its sha256 sidecar; returns the manifest's sha256."""
    data = manifest.to_json().encode()
    digest = hashlib.sha256(data).hexdigest()
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(run_dir / MANIFEST)
    (run_dir / MANIFEST_SUM).write_text(f"{digest}  {MANIFEST}\n")
    return digest


def read(run_dir: pathlib.Path) -> Manifest:
    return Manifest.from_json((run_dir / MANIFEST).read_text())


@dataclass(frozen=True)
class Problem:
    """One way a run directory differs from its manifest. ``artifact`` names the file."""

    artifact: str
    detail: str

    def __str__(self) -> str:
        return f"{self.artifact}: {self.detail}"


def check(run_dir: pathlib.Path, expected_manifest_sha: str | None = None) -> tuple[Manifest | None, list[Problem]]:
    """Compare every artifact's size and sha256 with the manifest, and the manifest with its recorded sha256."""
    path = run_dir / MANIFEST
    if not path.exists():
        return None, [Problem(MANIFEST, "missing (the run did not finish)")]
    actual = sha256_file(path)
    problems: list[Problem] = []
    sidecar = run_dir / MANIFEST_SUM
    recorded = sidecar.read_text().split()[0] if sidecar.exists() and sidecar.read_text().strip() else None
    if recorded is None:
        problems.append(Problem(MANIFEST_SUM, "missing"))
    elif recorded != actual:
        problems.append(Problem(MANIFEST, f"sha256 {actual} != {recorded} recorded in {MANIFEST_SUM}"))
    if expected_manifest_sha and expected_manifest_sha != actual:
        problems.append(Problem(MANIFEST, f"sha256 {actual} != {expected_manifest_sha} recorded in the Backup status"))
    try:
        manifest = read(run_dir)
    except (ValueError, KeyError, TypeError) as exc:
        return None, [*problems, Problem(MANIFEST, f"unreadable: {exc}")]
    for art in manifest.artifacts:
        file = run_dir / art.path
        if not file.is_file():
            problems.append(Problem(art.path, "missing"))
            continue
        size = file.stat().st_size
        if size != art.size:
            problems.append(Problem(art.path, f"size {size} != {art.size} in the manifest"))
            continue
        digest = sha256_file(file)
        if digest != art.sha256:
            problems.append(Problem(art.path, f"sha256 {digest} != {art.sha256} in the manifest"))
    return manifest, problems
