"""Every derived name, label and selector, in one place.

Builders, reconcilers, the local runtime and the tests all call these, so a
name is never spelled twice.
"""

from __future__ import annotations

from trading_operator.api.session import Role

MANAGED_BY = "trading-operator"
LABEL_SESSION = "trading.dev/session"
LABEL_ROLE = "trading.dev/role"
LABEL_BACKUP = "trading.dev/backup"
ANNOTATION_CONFIG_HASH = "trading.dev/config-hash"
# On a worker pod template: the version (resourceVersion) of each Secret its pods read, "name=rv,...";
# a new version rolls the pods (trading_operator.secretwatch, the rotation step of reconcile.session).
ANNOTATION_SECRET_VERSIONS = "trading.dev/secret-versions"
# A hash of the whole manifest the operator applies to a child (trading_operator.drift).
ANNOTATION_DESIRED_HASH = "trading.dev/desired-hash"
FINALIZER = "trading.dev/finalizer"
# Who asked, stamped by the API server (the chart's identityAdmission policies), never by a client.
ANNOTATION_HALT_BY = "trading.dev/halt-requested-by"
ANNOTATION_RESUME_BY = "trading.dev/resume-requested-by"
ANNOTATION_CLEAR_REDUCING_BY = "trading.dev/clear-reducing-requested-by"
ANNOTATION_MODE_BY = "trading.dev/mode-changed-by"  # on a RiskPolicy
FIELD_MANAGER = "trading-operator"

ROLE_SLUG = {
    Role.MARKET_DATA: "market-data",
    Role.STRATEGY: "strategy",
    Role.INFERENCE: "inference",
    Role.RISK: "risk",
    Role.EXECUTOR: "executor",
}


def deployment(session: str, role: Role | str) -> str:
    return f"{session}-{ROLE_SLUG[Role(role)]}"[:63].rstrip("-")


def configmap(session: str) -> str:
    return f"{session}-config"[:253]


def selector(session: str, role: Role | str) -> dict[str, str]:
    return {LABEL_SESSION: session, LABEL_ROLE: ROLE_SLUG[Role(role)]}


def labels(session: str, role: Role | str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "trading-worker",
        "app.kubernetes.io/instance": session,
        "app.kubernetes.io/part-of": "trading-platform",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_SESSION: session,
    }
    if role is not None:
        out["app.kubernetes.io/component"] = ROLE_SLUG[Role(role)]
        out[LABEL_ROLE] = ROLE_SLUG[Role(role)]
    return out


# ------------------------------------------------------------------ backups

BACKUP_MOUNT = "/backups"  # where a backup pod mounts spec.destination.pvc
MODEL_MOUNT = "/models"    # where backup and inference pods mount a pvc:// model claim (read-only)


def backup_job(backup: str) -> str:
    """The one-shot Job of a Backup (Job names are label values: at most 63 characters)."""
    return f"{backup}-backup"[:63].rstrip("-.")


def backup_cronjob(backup: str) -> str:
    """The CronJob of a scheduled Backup (at most 52 characters: the controller appends 11 to its Jobs)."""
    return f"{backup}-backup"[:52].rstrip("-.")


def backup_labels(backup: str, session: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "trading-backup",
        "app.kubernetes.io/instance": backup,
        "app.kubernetes.io/component": "backup",
        "app.kubernetes.io/part-of": "trading-platform",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_BACKUP: backup,
        LABEL_SESSION: session,
    }


# ------------------------------------------------------------------ per-session identity

WORKER_SA_PREFIX = "trading-worker-"  # the status admission policy (chart) derives the same name


def worker_service_account(session: str) -> str:
    """The ServiceAccount (and Role, RoleBinding) of one session's workers; session names are label values (<= 63)."""
    return f"{WORKER_SA_PREFIX}{session}"
