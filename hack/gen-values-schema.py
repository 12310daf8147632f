#!/usr/bin/env python3
"""Generate the chart's values.schema.json from values.yaml.

The comments are the documentation: the comment block right above a key is
its description, and a ``# @schema {...}`` line in that block adds JSON-schema
keywords (an enum, a pattern, bounds, or a ``type`` that makes an object or
list free-form so its defaults are not taken for its only allowed keys).
Types come from the defaults. Objects without an explicit type are closed
(``additionalProperties: false``), so a misspelt value fails `helm install`
instead of being ignored.

Usage: gen-values-schema.py [--check]   (make chart-schema)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "trading-platform"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
COMMENT = re.compile(r"^(?P<indent> *)#(?P<text>.*)$")

Path = tuple[str, ...]


def comments(text: str) -> dict[Path, tuple[str, dict[str, Any]]]:
    """Map every mapping key's path to (description, @schema keywords) from the comments above it."""
    found: dict[Path, tuple[str, dict[str, Any]]] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    block: list[str] = []
    skip_deeper_than: int | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            block = []
            continue
        comment = COMMENT.match(line)
        if comment:
            block.append(comment["text"].strip())
            continue
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                block = []
                continue
            skip_deeper_than = None
        key = KEY.match(line)
        if not key:  # a list item or a continuation: belongs to the value above
            block = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(k for _, k in stack), key["key"])
        description = " ".join(b for b in block if not b.startswith("@schema")).strip()
        extra: dict[str, Any] = {}
        for b in block:
            if b.startswith("@schema"):
                try:
                    extra.update(json.loads(b.removeprefix("@schema")))
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"values.yaml:{lineno}: bad @schema JSON: {exc}") from None
        found[path] = (description, extra)
        block = []
        rest = line[key.end():].strip()
        if rest in ("", "|", ">") and "type" not in extra:
            stack.append((indent, key["key"]))
        else:
            skip_deeper_than = indent
    return found


def type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def schema_for(path: Path, value: Any, docs: dict[Path, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    description, extra = docs.get(path, ("", {}))
    if path and not description:
        raise SystemExit(f"values.yaml: {'.'.join(path)} has no comment above it")
    node: dict[str, Any] = {}
    if description:
        node["description"] = description
    if isinstance(value, dict) and "type" not in extra:
        node["type"] = "object"
        node["additionalProperties"] = False
        node["properties"] = {k: schema_for((*path, k), v, docs) for k, v in value.items()}
    else:
        if "enum" not in extra:
            node["type"] = type_of(value)
        node["default"] = value
    node.update(extra)
    return node


def generate() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = schema_for((), values, comments(text))
    # Parent charts may pass `global`; accept it.
    schema["properties"]["global"] = {"type": "object", "description": "Values shared with parent charts."}
    schema = {"$schema": "http://json-schema.org/draft-07/schema#",
              "title": "trading-platform chart values", **schema}
    return json.dumps(schema, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if values.schema.json is stale")
    args = parser.parse_args()
    out = CHART / "values.schema.json"
    wanted = generate()
    if args.check:
        if not out.exists() or out.read_text() != wanted:
            print("values.schema.json is stale (run `make chart-schema`)", file=sys.stderr)
            return 1
        return 0
    out.write_text(wanted)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
