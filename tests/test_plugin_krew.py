"""The krew manifest of ``kubectl trading`` (plugin/krew/trading.yaml).

Its shape is checked against krew's documented manifest rules (apiVersion and kind, the name is the
file's and a safe plugin name, a one-line shortDescription, a v-prefixed semantic version, and per
platform: uri, a sha256 of 64 hex digits, bin, files with from/to, a non-empty selector on os/arch
only). Its sha256 must be the archive's that ``make plugin-archive`` builds, built here in a scratch
copy of the Makefile, the script and the builder (so a stale manifest is never silently re-stamped),
and that archive must hold the plugin exactly, executable, under the name ``bin`` points at.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
import shutil
import subprocess
import tarfile

import yaml

from tests.conftest import ROOT

MANIFEST = ROOT / "plugin" / "krew" / "trading.yaml"
SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def manifest() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(MANIFEST.read_text())


def test_manifest_shape_follows_krews_rules() -> None:
    m = manifest()
    assert m["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert m["kind"] == "Plugin"
    name = m["metadata"]["name"]
    assert name == MANIFEST.stem == "trading" and re.fullmatch(r"[\w-]+", name)
    spec = m["spec"]
    assert spec["shortDescription"] and not re.search(r"[\r\n]", spec["shortDescription"])
    assert SEMVER.match(spec["version"]), spec["version"]
    assert spec["platforms"]
    for platform in spec["platforms"]:
        assert platform["uri"].startswith("https://") and platform["uri"].endswith(".tar.gz")
        assert spec["version"] in platform["uri"], "the archive's address names the version it carries"
        assert re.fullmatch(r"[a-f0-9]{64}", platform["sha256"])
        assert platform["bin"]
        assert platform["files"] and all(f["from"] and f["to"] for f in platform["files"])
        selector = platform["selector"]
        keys = list(selector.get("matchLabels") or {}) + [e["key"] for e in selector.get("matchExpressions") or []]
        assert keys and set(keys) <= {"os", "arch"}
        assert "matchLabels" not in selector or selector["matchLabels"]
        assert "matchExpressions" not in selector or selector["matchExpressions"]
    assert "kubectl trading" in MANIFEST.read_text()  # the name kubectl will run it under


def test_sha256_is_the_archive_make_builds(tmp_path: pathlib.Path) -> None:
    for rel in ("Makefile", "plugin/kubectl-trading", "hack/build-plugin-archive.py", "plugin/krew/trading.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tmp_path / rel)
    proc = subprocess.run(["make", "-s", "plugin-archive"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    archive = tmp_path / "dist" / "kubectl-trading.tar.gz"
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    platform = manifest()["spec"]["platforms"][0]
    assert platform["sha256"] == sha, (
        "plugin/krew/trading.yaml is stale: plugin/kubectl-trading changed; run `make plugin-archive`")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [platform["files"][0]["from"]] == [platform["bin"]]
        assert members[0].mode & 0o111 == 0o111
        extracted = tar.extractfile(members[0])
        assert extracted is not None and extracted.read() == (ROOT / "plugin" / "kubectl-trading").read_bytes()
    again = subprocess.run(["make", "-s", "plugin-archive"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and hashlib.sha256(archive.read_bytes()).hexdigest() == sha, "not reproducible"


def test_description_names_every_command_the_plugin_has() -> None:
    usage = subprocess.run([str(ROOT / "plugin" / "kubectl-trading"), "--help"], capture_output=True, text=True,
                           timeout=60).stdout
    found = re.search(r"\{([a-z,-]+)\}", usage)
    assert found, usage
    description = manifest()["spec"]["description"].replace("\n", " ")
    for command in found.group(1).split(","):
        assert command in description, f"plugin/krew/trading.yaml does not mention `{command}`"
