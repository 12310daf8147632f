#!/usr/bin/env python3
"""Copy crds/*.yaml into the chart as templates gated by values.

Why templates and not the chart's crds/ folder: Helm installs crds/ verbatim
and never upgrades it, and it cannot be gated by a value. As templates the
CRDs follow `crds.create`, are upgraded with the chart, and carry
``helm.sh/resource-policy: keep`` when `crds.keep` is true.

The copy is the generated file byte for byte, plus the gate, one header line
and the annotation block; tests/deploy checks that the rendered CRDs equal
crds/ (`--check` here fails when the templates are stale).

Standard library only.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "crds"
TARGET = ROOT / "charts" / "trading-platform" / "templates" / "crds"

KEEP = (
    "  {{- if .Values.crds.keep }}\n"
    "  annotations:\n"
    "    helm.sh/resource-policy: keep\n"
    "  {{- end }}\n"
)


def render(path: pathlib.Path) -> str:
    """The chart template for one generated CRD file."""
    text = path.read_text()
    if "{{" in text or "}}" in text:
        # Would be read as template actions; escape rather than silently corrupt.
        text = text.replace("{{", "{{ `{{` }}").replace("}}", "{{ `}}` }}")
    lines = text.splitlines(keepends=True)
    try:
        meta = lines.index("metadata:\n")
    except ValueError:
        raise SystemExit(f"{path}: no top-level metadata block") from None
    end = meta + 1
    while end < len(lines) and lines[end].startswith("  "):
        if lines[end].startswith("  annotations:"):
            raise SystemExit(f"{path}: already has annotations; teach sync-chart-crds.py to merge them")
        end += 1
    body = "".join(lines[:end]) + KEEP + "".join(lines[end:])
    header = (
        "{{- if .Values.crds.create }}\n"
        f"# Copied from crds/{path.name} by hack/sync-chart-crds.py (make chart-crds). Do not edit.\n"
    )
    return header + body + ("" if body.endswith("\n") else "\n") + "{{- end }}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the chart's copies are stale")
    args = parser.parse_args()
    wanted = {p.name: render(p) for p in sorted(SOURCE.glob("*.yaml"))}
    present = {p.name for p in TARGET.glob("*.yaml")}
    stale = sorted(n for n, t in wanted.items() if not (TARGET / n).exists() or (TARGET / n).read_text() != t)
    extra = sorted(present - set(wanted))
    if args.check:
        if stale or extra:
            print(f"chart CRDs are stale (run `make chart-crds`): stale={stale} extra={extra}", file=sys.stderr)
            return 1
        return 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (TARGET / name).write_text(wanted[name])
        print(f"wrote {TARGET.relative_to(ROOT) / name}")
    for name in extra:
        (TARGET / name).unlink()
        print(f"removed {TARGET.relative_to(ROOT) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
