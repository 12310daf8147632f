"""Drill: Secret rotation (docs/security.md, "Rotation") on the whole local platform.

A running worker keeps the environment it started with: a rotated Secret reaches a worker only when
its pod is replaced. The operator watches Secret metadata (secretwatch.py) and rolls the pods that
read a changed Secret, the executor only after it has stopped sending and handled a halt: with no
halt in force it raises a Rotation halt, replaces the executor once it has handled it, and clears
the halt once the new executor runs the new version and has handled it too. Asserted from the
executor's own process environment (the local runtime's process for the pod), from what it did
(orders sent before and after, none while halted) and from status and Events.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
from collections.abc import Callable

import pytest

from tests.conftest import wait_for
from tests.drills.harness import (
    BROKER_KEY_ID,
    BROKER_SECRET,
    ROTATED_KEY_ID,
    ROTATED_SECRET_KEY,
    Drill,
)
from trading_operator.api.session import Role

pytestmark = [pytest.mark.drill, pytest.mark.e2e]


def _executor_env(d: Drill) -> tuple[int, dict[str, str]]:
    replica = d.replicas(Role.EXECUTOR)[0]
    assert replica.proc is not None
    raw = pathlib.Path(f"/proc/{replica.proc.pid}/environ").read_bytes()
    env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    return replica.proc.pid, env


def _rotate(d: Drill) -> str:
    """Apply new broker keys to the session's Secret; returns the Secret's new version (resourceVersion)."""
    rotated = d.platform.kubectl("create", "secret", "generic", BROKER_SECRET, "-n", d.namespace,
                                 f"--from-literal=APCA_API_KEY_ID={ROTATED_KEY_ID}",
                                 f"--from-literal=APCA_API_SECRET_KEY={ROTATED_SECRET_KEY}",
                                 "--dry-run=client", "-o", "yaml").stdout
    d.platform.kubectl("apply", "-f", "-", input=rotated)
    secret = json.loads(d.platform.kubectl("get", "secret", BROKER_SECRET, "-n", d.namespace, "-o", "json").stdout)
    return str(secret["metadata"]["resourceVersion"])


def _new_executor(d: Drill, old_pid: int) -> dict[str, str]:
    _, env = wait_for(lambda: (lambda p, e: (p, e) if p != old_pid else None)(*_executor_env(d)),
                      timeout=90, what="a new executor process")
    return env


def test_a_rotated_broker_secret_rolls_the_executor_behind_a_rotation_halt(make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    pid, env = _executor_env(d)
    assert env["APCA_API_KEY_ID"] == BROKER_KEY_ID
    d.wait_condition("SecretsCurrent", "True", "Current")
    before = d.status()["workers"]["executor"]["secretVersions"][BROKER_SECRET]
    assert d.order_outcome(d.send_intent("AAPL", "buy", 10)).sent

    version = _rotate(d)
    assert version != before
    # The operator halts (Rotation) first: the executor is not replaced while it may send.
    halt = d.wait_status(lambda s: (s.get("halt") or {}).get("source") == "Rotation", "the Rotation halt",
                         timeout=60)["halt"]
    # An intent while the Rotation halt is in force is refused (by the old executor or the new one).
    in_halt = d.send_intent("AAPL", "buy", 3)
    assert BROKER_SECRET in halt.get("reason", ""), halt
    new_env = _new_executor(d, pid)
    assert new_env["APCA_API_KEY_ID"] == ROTATED_KEY_ID and new_env["APCA_API_SECRET_KEY"] == ROTATED_SECRET_KEY
    # ... and the operator clears its own halt once the new executor runs the new version and handled it.
    st = d.wait_status(lambda s: s.get("halt") is None and (s.get("lastHalt") or {}).get("id") == halt["id"]
                       and s.get("phase") == "MarketOpen", "the Rotation halt cleared", timeout=90)
    assert st["executor"]["secretVersions"][BROKER_SECRET] == version
    d.wait_condition("SecretsCurrent", "True", "Current")
    assert d.status()["workers"]["executor"]["secretVersions"][BROKER_SECRET] == version
    assert {"SecretChanged", "Rotated"} <= set(d.event_reasons())
    d.wait_status(lambda s: (s.get("executor") or {}).get("tradingState") == "Active", "the executor Active")
    assert d.order_outcome(d.send_intent("MSFT", "buy", 5)).sent
    # What the executor did: nothing was sent while the Rotation halt was in force.
    outcome = d.order_outcome(in_halt)
    assert outcome.refused and outcome.reason == "TradingHalted" and not outcome.sent, outcome
    since = dt.datetime.fromisoformat(halt["since"].replace("Z", "+00:00"))
    cleared = dt.datetime.fromisoformat(st["lastHalt"]["clearedAt"].replace("Z", "+00:00"))
    print(f"Rotation halt {halt['id']} in force for {(cleared - since).total_seconds():.1f}s; intent in it: {in_halt}")
    during = [o for o in d.journal_orders() if since <= o["created_at"] <= cleared]
    assert not during, f"orders created while the Rotation halt was in force: {during}"


def test_under_a_user_halt_the_executor_rolls_and_the_user_resumes(make_drill: Callable[..., Drill]) -> None:
    """The runbook's careful path: halt first; the rotation replaces the executor under that halt (no
    Rotation halt), and the session stays halted under the same halt until the user resumes."""
    d = make_drill()
    pid, env = _executor_env(d)
    assert env["APCA_API_KEY_ID"] == BROKER_KEY_ID
    d.patch_spec({"halted": True, "haltReason": "rotating broker keys"})
    halt = d.wait_status(lambda s: s.get("halt") and (s.get("executor") or {}).get("haltHandled") == s["halt"]["id"],
                         "the executor to handle the halt")["halt"]
    version = _rotate(d)
    new_env = _new_executor(d, pid)
    assert new_env["APCA_API_KEY_ID"] == ROTATED_KEY_ID
    st = d.wait_status(lambda s: (s.get("executor") or {}).get("secretVersions", {}).get(BROKER_SECRET) == version
                       and (s.get("workers") or {}).get("executor", {}).get("ready") == 1, "the new executor ready",
                       timeout=90)
    assert st["halt"]["id"] == halt["id"] and st["phase"] == "Halted"  # no second halt, the user's stays
    d.patch_spec({"halted": False, "haltReason": None})
    d.wait_status(lambda s: s.get("phase") == "MarketOpen" and s.get("halt") is None, "resumed", timeout=60)
    d.wait_status(lambda s: (s.get("executor") or {}).get("tradingState") == "Active", "the executor Active")
    assert d.order_outcome(d.send_intent("MSFT", "buy", 5)).sent
