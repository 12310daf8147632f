#!/usr/bin/env python3
"""Build the kubectl plugin's archive (dist/kubectl-trading.tar.gz) and stamp its sha256 into the
krew manifest (plugin/krew/trading.yaml).

The archive is reproducible: one file, kubectl-trading, mode 0755, owner 0:0, mtime 0, and a gzip
header without a name or time, so the same script always gives the same bytes and the manifest's
sha256 can be checked (a test builds it with `make plugin-archive` and compares). Publish the archive
at the manifest's `uri`; `kubectl krew install --manifest=plugin/krew/trading.yaml
--archive=dist/kubectl-trading.tar.gz` installs it from the files here.

Standard library only. Usage: build-plugin-archive.py [--check]  (make plugin-archive)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pathlib
import re
import sys
import tarfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "plugin" / "kubectl-trading"
ARCHIVE = ROOT / "dist" / "kubectl-trading.tar.gz"
MANIFEST = ROOT / "plugin" / "krew" / "trading.yaml"
SHA = re.compile(r"(?m)^(\s*sha256:\s*)\"?[0-9a-f]*\"?\s*$")


def archive_bytes() -> bytes:
    data = SCRIPT.read_bytes()
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("kubectl-trading")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(tar_buffer.getvalue())
    return out.getvalue()


def stamped(manifest: str, sha256: str) -> str:
    if len(SHA.findall(manifest)) != 1:
        raise SystemExit(f"{MANIFEST.relative_to(ROOT)}: expected exactly one sha256 line")
    return SHA.sub(lambda m: m.group(1) + sha256, manifest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; fail if the manifest's sha256 is not the archive's")
    args = parser.parse_args()
    blob = archive_bytes()
    sha256 = hashlib.sha256(blob).hexdigest()
    manifest = MANIFEST.read_text()
    wanted = stamped(manifest, sha256)
    if args.check:
        if wanted != manifest:
            print(f"{MANIFEST.relative_to(ROOT)}: sha256 is not the archive's {sha256} (run `make plugin-archive`)",
                  file=sys.stderr)
            return 1
        return 0
    ARCHIVE.parent.mkdir(exist_ok=True)
    ARCHIVE.write_bytes(blob)
    MANIFEST.write_text(wanted)
    print(f"wrote {ARCHIVE.relative_to(ROOT)} (sha256 {sha256}) and stamped {MANIFEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
