"""Has a child (worker Deployment, session ConfigMap) drifted from what the operator wants?

Two ways a child goes wrong, two checks, and neither needs the whole live object:

- **The desired object changed** (an edit of ``spec.workers.<role>.resources``, tolerations,
  anything): every child carries ``trading.dev/desired-hash``, a hash of the *whole* manifest the
  operator applies. A live hash other than the one just computed means "apply". Comparing a
  hand-picked list of fields missed every field not on the list (issue 20, defect 2).
- **Someone else wrote it** (``kubectl edit``, a stale write of a deposed leader): the API
  server's ``managedFields`` record, per writer, when it last wrote which fields. A write to the
  object's content (``spec`` of a Deployment, ``data`` of a ConfigMap) by any manager other than
  ours, no older than our own last apply, means "apply" (a forced server-side apply takes the
  fields back). Status writes (the ``status`` subresource) are not content.

The live objects are kept trimmed to what these checks and the reconcile read (``trim``): at 1,000
sessions the full bodies were most of the operator's memory.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from trading_operator import names

__all__ = ["CONTENT", "drift_reason", "stamp", "trim"]

#: The top-level fields that are an object's content, per kind (what a foreign write may not change).
CONTENT: dict[str, tuple[str, ...]] = {"Deployment": ("f:spec",), "ConfigMap": ("f:data", "f:binaryData")}


def stamp(manifest: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The manifest with its desired-hash annotation, and the hash (of everything else in it)."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]
    stamped = copy.deepcopy(dict(manifest))
    meta = stamped.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), names.ANNOTATION_DESIRED_HASH: digest}
    return stamped, digest


def _foreign_writer(kind: str, managed_fields: list[Mapping[str, Any]] | None) -> str | None:
    """The manager that wrote the object's content no earlier than our last apply, if any."""
    entries = managed_fields or []
    ours = [str(e.get("time") or "") for e in entries
            if e.get("manager") == names.FIELD_MANAGER and e.get("operation") == "Apply"]
    our_time = max(ours) if ours else ""
    roots = CONTENT.get(kind, ("f:spec",))
    for entry in entries:
        if entry.get("manager") == names.FIELD_MANAGER or entry.get("subresource") == "status":
            continue
        fields = entry.get("fieldsV1") or {}
        # RFC 3339 UTC times of one format compare as strings; same second counts as after ours.
        if any(root in fields for root in roots) and str(entry.get("time") or "") >= our_time:
            return str(entry.get("manager") or "unknown")
    return None


def trim(live: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of a live child: name, desired hash, a foreign writer, ready replicas."""
    meta = live.get("metadata") or {}
    kind = str(live.get("kind") or ("Deployment" if "spec" in live else "ConfigMap"))
    trimmed: dict[str, Any] = {
        "kind": kind,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                     "annotations": {names.ANNOTATION_DESIRED_HASH:
                                     (meta.get("annotations") or {}).get(names.ANNOTATION_DESIRED_HASH)}},
        "foreignWriter": _foreign_writer(kind, meta.get("managedFields")),
    }
    if kind == "Deployment":
        spec, status = live.get("spec") or {}, live.get("status") or {}
        template_annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
        trimmed["metadata"]["generation"] = meta.get("generation")
        trimmed["spec"] = {"replicas": spec.get("replicas")}
        if names.ANNOTATION_SECRET_VERSIONS in template_annotations:  # the rotation step reads it
            trimmed["spec"]["template"] = {"metadata": {"annotations": {
                names.ANNOTATION_SECRET_VERSIONS: template_annotations[names.ANNOTATION_SECRET_VERSIONS]}}}
        trimmed["status"] = {"readyReplicas": status.get("readyReplicas") or 0,
                             "updatedReplicas": status.get("updatedReplicas") or 0,
                             "replicas": status.get("replicas") or 0,
                             "observedGeneration": status.get("observedGeneration")}
    return trimmed


def drift_reason(desired_hash: str, live: Mapping[str, Any] | None) -> str | None:
    """Why the live child must be applied again (``missing``, ``changed``, ``edited``), or None."""
    if live is None:
        return "missing"
    if ((live.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_DESIRED_HASH) != desired_hash:
        return "changed"
    if live.get("foreignWriter"):
        return "edited"
    return None
