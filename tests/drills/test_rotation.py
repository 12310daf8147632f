"""Drill: the credential rotation runbook (docs/security.md) — halt, rotate, restart, resume.

A running worker keeps the environment it started with: a rotated Secret reaches the executor only
when its pod is replaced. The operator does not read Secrets (so it cannot see a rotation); the
runbook orders the steps so the executor is replaced only after it stopped sending and handled
the halt, and trading resumes only once the new executor is ready. Asserted from the executor's
own process environment (the local runtime's process for the pod), then from what it did.
"""

from __future__ import annotations

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
from trading_operator import names
from trading_operator.api.session import Role

pytestmark = [pytest.mark.drill, pytest.mark.e2e]


def _executor_env(d: Drill) -> tuple[int, dict[str, str]]:
    replica = d.replicas(Role.EXECUTOR)[0]
    assert replica.proc is not None
    raw = pathlib.Path(f"/proc/{replica.proc.pid}/environ").read_bytes()
    env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    return replica.proc.pid, env


def test_rotated_broker_keys_reach_the_executor_after_halt_and_restart(make_drill: Callable[..., Drill]) -> None:
    d = make_drill()
    pid, env = _executor_env(d)
    assert env["APCA_API_KEY_ID"] == BROKER_KEY_ID
    assert d.order_outcome(d.send_intent("AAPL", "buy", 10)).sent

    # 1. Halt, and wait until the executor has handled it (stopped sending, open orders cancelled).
    d.patch_spec({"halted": True, "haltReason": "rotating broker keys"})
    halt = d.wait_status(lambda s: s.get("halt") and (s.get("executor") or {}).get("haltHandled") == s["halt"]["id"],
                         "the executor to handle the halt")["halt"]
    # 2. Rotate the Secret. The running executor keeps the keys it started with.
    rotated = d.platform.kubectl("create", "secret", "generic", BROKER_SECRET, "-n", d.namespace,
                                 f"--from-literal=APCA_API_KEY_ID={ROTATED_KEY_ID}",
                                 f"--from-literal=APCA_API_SECRET_KEY={ROTATED_SECRET_KEY}",
                                 "--dry-run=client", "-o", "yaml").stdout
    d.platform.kubectl("apply", "-f", "-", input=rotated)
    assert _executor_env(d) == (pid, env)
    # 3. Replace the executor (and any other role that uses the Secret).
    d.platform.kubectl("rollout", "restart", f"deployment/{names.deployment(d.name, Role.EXECUTOR)}",
                       "-n", d.namespace)
    new_pid, new_env = wait_for(lambda: (lambda p, e: (p, e) if p != pid else None)(*_executor_env(d)),
                                timeout=60, what="a new executor process")
    assert new_env["APCA_API_KEY_ID"] == ROTATED_KEY_ID and new_env["APCA_API_SECRET_KEY"] == ROTATED_SECRET_KEY
    assert new_pid != pid
    # The session stays halted under the same halt while the executor is replaced.
    st = d.wait_status(lambda s: (s.get("workers") or {}).get("executor", {}).get("ready") == 1,
                       "the new executor ready", timeout=60)
    assert st["halt"]["id"] == halt["id"] and st["phase"] == "Halted"
    # 4. Resume: trading goes on with the new keys.
    d.patch_spec({"halted": False, "haltReason": None})
    d.wait_status(lambda s: s.get("phase") == "MarketOpen" and s.get("halt") is None, "resumed", timeout=60)
    d.wait_status(lambda s: (s.get("executor") or {}).get("tradingState") == "Active", "the executor Active")
    assert d.order_outcome(d.send_intent("MSFT", "buy", 5)).sent
