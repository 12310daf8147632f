"""The Events a reconcile decides to post (conditions themselves: ``trading_operator.api.status``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event a reconcile decided to post (after its status write succeeded)."""

    type: str  # Normal | Warning
    reason: str
    message: str
