"""Generate the CustomResourceDefinitions from the pydantic models.

The models in ``trading_operator.api`` are the single source of the API.
This module turns their JSON Schema into Kubernetes *structural* OpenAPI
v3 schemas (every ``$ref`` inlined, ``Optional`` collapsed, JSON Schema 2020
numeric bounds rewritten to OpenAPI's boolean form, ``extra="forbid"``
expressed as "no unknown fields" by omission), adds the CEL rules the models
carry, and the phase transition rule generated from ``api.phases``.

``python -m trading_operator.crdgen`` writes ``crds/``; ``--check`` exits
non-zero when the checked-in YAML is stale (a test runs that).
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any

import pydantic
import yaml

from trading_operator import api
from trading_operator.api import common, phases

_DROP_KEYS = {"title", "additionalProperties", "$defs", "discriminator"}


class SchemaError(ValueError):
    """A model uses a construct that has no structural-schema equivalent."""


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        node = _merge(_resolve(target, defs), node)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise SchemaError(f"union types have no structural schema: {branches}")
        if node.get("default", ...) is None:
            node.pop("default")
        node = _merge(_resolve(branches[0], defs), node)
    if "allOf" in node and len(node["allOf"]) == 1:
        node = _merge(_resolve(node.pop("allOf")[0], defs), node)
    return {k: _resolve(v, defs) if k not in ("default", "enum", "example") else v for k, v in node.items()}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key == "x-kubernetes-validations":
            out[key] = list(out.get(key, [])) + list(value)
        else:
            out[key] = value
    return out


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one resolved JSON Schema node (recursively) into an OpenAPI v3 structural node."""
    node = dict(node)
    if node.get("additionalProperties") is True or (
            node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["x-kubernetes-preserve-unknown-fields"] = True
        node.pop("additionalProperties", None)
    extra_props = node.get("additionalProperties")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _structural(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value)
        elif key == "x-kubernetes-validations" and not value:
            continue
        else:
            out[key] = value
    if isinstance(extra_props, dict):
        out["additionalProperties"] = _structural(extra_props)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise SchemaError(f"schema node without a type: {node}")
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("required", [])
        if not out["required"]:
            out.pop("required")
    return out


def model_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


@dataclass(frozen=True)
class Kind:
    model: type[pydantic.BaseModel]
    spec: type[pydantic.BaseModel]
    status: type[pydantic.BaseModel]
    plural: str
    short_names: list[str]
    columns: list[dict[str, Any]]
    spec_required: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.model.__name__

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{common.GROUP}"


def _col(name: str, path: str, type_: str = "string", description: str = "", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if description:
        col["description"] = description
    if priority:
        col["priority"] = priority
    return col


AGE = _col("Age", ".metadata.creationTimestamp", "date")

KINDS: list[Kind] = [
    Kind(api.TradingSession, api.TradingSessionSpec, api.TradingSessionStatus, "tradingsessions", ["ts", "tsess"], [
        _col("Phase", ".status.phase", description="Session phase"),
        _col("Ready", '.status.conditions[?(@.type=="Ready")].reason',
             description="Trading, or why not: Halted, Reducing, Suspended, OutOfHours, PreMarketChecksFailing, ..."),
        _col("Halt", ".status.halt.source", description="Who raised the halt in force (empty when none)"),
        _col("Suspended", ".spec.suspend", "boolean", "Maintenance mode"),
        _col("Orders", ".status.summary.orders", "integer", "Orders sent today"),
        _col("PnL%", ".status.summary.dailyPnlPct", "number", "Daily P&L, percent"),
        _col("Clock", ".status.clock", description="Session clock (simulated clocks run ahead of wall time)",
             priority=1),
        _col("State", ".status.tradingState", description="Active, Reducing or Halted", priority=1),
        _col("Next", ".status.nextTransition.phase", description="Next calendar phase", priority=1),
        _col("At", ".status.nextTransition.at", description="When the next phase starts", priority=1),
        _col("Policy", ".spec.riskPolicyRef.name", description="RiskPolicy", priority=1),
        AGE,
    ]),
    Kind(api.RiskPolicy, api.RiskPolicySpec, api.RiskPolicyStatus, "riskpolicies", ["rp", "riskpol"], [
        _col("Mode", ".spec.mode", description="Kill switch: Active, Reducing, Halted"),
        _col("Valid", '.status.conditions[?(@.type=="Valid")].status', description="Policy is valid"),
        _col("Sessions", ".status.sessionCount", "integer", "Referencing sessions"),
        _col("Live", ".spec.allowLive", "boolean", "Live trading allowed", priority=1),
        AGE,
    ], spec_required=False),
    Kind(api.Backup, api.BackupSpec, api.BackupStatus, "backups", ["tbk", "tbackup"], [
        _col("Session", ".spec.sessionRef.name", description="Session backed up"),
        _col("Schedule", ".spec.schedule", description="Cron schedule"),
        _col("Phase", ".status.phase", description="Latest run"),
        _col("Verified", ".status.verified", "boolean", "Latest run verified"),
        _col("Size", ".status.sizeBytes", "integer", "Bytes in latest run"),
        _col("Last", ".status.lastSuccessfulTime", "date", "Last completed run", priority=1),
        AGE,
    ]),
]


def _status_schema(kind: Kind) -> dict[str, Any]:
    schema = model_schema(kind.status)
    if kind.model is api.TradingSession:
        phase = schema["properties"]["phase"]
        phase["x-kubernetes-validations"] = [
            common.cel(phases.cel_transition_rule(),
                       "illegal phase transition: see the state machine in trading_operator.api.phases",
                       reason="FieldValueInvalid"),
            common.cel("oldSelf.hasValue() || self == 'Initializing'",
                       "a session's first phase must be Initializing", optional_old_self=True,
                       reason="FieldValueInvalid"),
        ]
    return schema


def crd(kind: Kind) -> dict[str, Any]:
    spec_schema = model_schema(kind.spec)
    if not kind.spec_required:
        spec_schema["default"] = {}
    root: dict[str, Any] = {
        "type": "object",
        "description": (kind.model.__doc__ or "").strip(),
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: trading.dev/v1alpha1."},
            "kind": {"type": "string", "description": f"{kind.kind}."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": _status_schema(kind),
        },
    }
    if kind.spec_required:
        root["required"] = ["spec"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "trading-platform"},
        },
        "spec": {
            "group": common.GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": kind.short_names,
                "categories": ["trading"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": common.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": kind.columns,
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


HEADER = "# Generated by `make crds` (python -m trading_operator.crdgen) from trading_operator.api. Do not edit.\n"


def render(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=120)


def crd_file(kind: Kind) -> str:
    return f"{common.GROUP}_{kind.plural}.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate crds/*.yaml from the pydantic models.")
    parser.add_argument("--out", default="crds", help="output directory")
    parser.add_argument("--check", action="store_true", help="fail if the files on disk are stale")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    stale = []
    for kind in KINDS:
        path, text = out / crd_file(kind), render(kind)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale CRDs (run `make crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
