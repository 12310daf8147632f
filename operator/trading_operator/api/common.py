"""Types shared by the three custom resources.

``ApiModel`` fixes the wire format once: camelCase on the wire, snake_case in
Python, unknown fields forbidden (the API server rejects them too, because
the generated CRD declares every field). Helpers here attach Kubernetes
schema extensions (CEL rules, list types) to pydantic fields so that the CRD
generator has a single source.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, Literal

import pydantic
from pydantic import alias_generators

GROUP = "trading.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ApiModel(pydantic.BaseModel):
    """Base of every spec/status model: camelCase aliases, strict about unknown fields."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: aliases, JSON types, unset optionals dropped."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None,
        optional_old_self: bool = False) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    if optional_old_self:
        entry["optionalOldSelf"] = True
    return entry


def rules(*entries: dict[str, Any]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules."""
    return {"x-kubernetes-validations": list(entries)}


def object_default(model: type[ApiModel]) -> dict[str, Any]:
    """Schema extra: a sub-object defaults to the model's own defaults, written out in full.

    Written out (not ``{}``) because the API server checks a default against
    the object's CEL rules before nested defaults are applied.
    """
    return {"default": model().wire()}


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A ``metav1.Condition``-shaped observation."""

    type: str = pydantic.Field(
        description="Kind of condition, CamelCase (e.g. Ready, Halted, PolicyApplied).",
        pattern=r"^[A-Z][A-Za-z0-9]*$",
        max_length=64,
    )
    status: Literal["True", "False", "Unknown"] = pydantic.Field(
        description="True, False or Unknown.")
    reason: str = pydantic.Field(
        description="One-word CamelCase reason for the condition's last transition.",
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        max_length=1024,
    )
    message: str = pydantic.Field(
        default="", description="Human-readable detail about the transition.", max_length=32768)
    last_transition_time: dt.datetime = pydantic.Field(
        description="When the condition last changed from one status to another.")
    observed_generation: int | None = pydantic.Field(
        default=None, ge=0,
        description="The .metadata.generation the condition was set against.")


class LocalObjectRef(ApiModel):
    """A reference to an object of a known kind in the same namespace."""

    name: str = pydantic.Field(
        description="Name of the referenced object in this namespace.",
        min_length=1, max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )


class ObjectMeta(ApiModel):
    """The parts of metadata the platform reads."""

    model_config = pydantic.ConfigDict(extra="ignore")

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    annotations: dict[str, str] = pydantic.Field(default_factory=dict)
    creation_timestamp: dt.datetime | None = None
    deletion_timestamp: dt.datetime | None = None


S3_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
S3_PREFIX_PATTERN = r"^([A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*)?$"


class S3SecretRef(ApiModel):
    """The Secret holding the object store's access key pair. Keys are never written inline."""

    name: str = pydantic.Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                               description="Name of a Secret in this object's namespace.")
    access_key_id_key: str = pydantic.Field(
        default="AWS_ACCESS_KEY_ID", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in the Secret holding the access key id (passed to the pod as AWS_ACCESS_KEY_ID).")
    secret_access_key_key: str = pydantic.Field(
        default="AWS_SECRET_ACCESS_KEY", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in the Secret holding the secret access key (passed to the pod as AWS_SECRET_ACCESS_KEY).")


class S3Access(ApiModel):
    """How to reach an S3-compatible object store: endpoint, region and the Secret with its keys."""

    endpoint: str | None = pydantic.Field(
        default=None, max_length=512, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="URL of the S3 API (e.g. http://trading-s3.trading:7070 for an in-cluster server). "
                    "Absent: AWS S3 of `region`.")
    region: str = pydantic.Field(default="us-east-1", min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$",
                                 description="Region of the bucket (signing region for S3-compatible servers).")
    credentials_secret_ref: S3SecretRef = pydantic.Field(
        description="Secret with the access key pair, read by the pod through secretKeyRef (never inline).")
