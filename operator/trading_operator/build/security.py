"""The ``restricted`` Pod Security Standard, written once for every pod the operator builds.

Worker Deployments and backup Jobs both run the workers' image as a
non-root user with a read-only root filesystem, no capabilities and the
runtime's default seccomp profile; a namespace labelled
``pod-security.kubernetes.io/enforce=restricted`` admits them unchanged.
"""

from __future__ import annotations

from typing import Any

RUN_AS = 10001


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"}}
