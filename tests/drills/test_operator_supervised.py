"""Drill: the local platform's operator is supervised - killed, it is started again and reconciles.

Issue 20, defect 6: the local platform had no supervisor, so after any operator exit (a crash, or
its own exit when it cannot renew its Lease through an API-server outage) the demo ran on without
an operator. Here the operator is SIGKILLed; the supervisor starts it again, the new process takes
the Lease once the dead one's has expired, and a user halt and resume are reconciled by it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.drills.harness import Drill
from trading_dev.platform import LocalPlatform

pytestmark = [pytest.mark.drill, pytest.mark.e2e]


def test_a_killed_operator_is_restarted_and_reconciles(make_drill: Callable[..., Drill],
                                                        platform: LocalPlatform) -> None:
    d = make_drill()
    replica = platform.operators[0]
    exits, old_pid = len(replica.exits), replica.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()
    new_pid = replica.wait_running(exits, timeout=20)
    assert new_pid != old_pid and replica.exits[-1][1] == -signal.SIGKILL
    print(f"operator restarted {time.monotonic() - killed:.1f}s after SIGKILL")

    d.patch_spec({"halted": True, "haltReason": "drill: supervisor"})
    st = d.wait_status(lambda s: s.get("phase") == "Halted" and s.get("halt"), "a halt reconciled by the new operator",
                       timeout=60)
    assert st["halt"]["source"] == "User"
    print(f"halt reconciled {time.monotonic() - killed:.1f}s after SIGKILL")
    d.patch_spec({"halted": False, "haltReason": None})
    d.wait_status(lambda s: s.get("phase") == "MarketOpen" and not s.get("halt"), "resumed", timeout=60)
    assert replica.pid == new_pid and len(replica.exits) == exits + 1  # one restart, and it stays up
