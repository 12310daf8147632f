"""Figures of a fault drill, from the records the platform writes (journal, exchange), never its claims."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.drills.harness import Drill


@dataclass
class IntentStream:
    """Sends a small market order every ``interval`` seconds from a thread; remembers every client_order_id."""

    drill: Drill
    interval: float = 0.25
    coids: list[str] = field(default_factory=list)
    sent_at: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> IntentStream:
        self._thread = threading.Thread(target=self._run, name="intents", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval):
            symbol = self.drill.symbols[n % len(self.drill.symbols)]
            side = "buy" if (n // 2) % 2 == 0 else "sell"
            try:  # the bus itself may be down (a Redis drill): an intent not published was never sent
                coid = self.drill.send_intent(symbol, side, 1)
            except Exception:
                self.errors += 1
                continue
            self.coids.append(coid)
            self.sent_at[coid] = time.time()
            n += 1


def order_figures(d: Drill, coids: list[str], settle: float = 60.0) -> dict[str, Any]:
    """Lost, duplicated, unresolved orders once the platform has had ``settle`` seconds to finish."""
    deadline = time.monotonic() + settle
    pending = list(coids)
    while pending and time.monotonic() < deadline:
        pending = [c for c in pending if d.outcome_now(c) is None]
        if pending:
            time.sleep(0.5)
    journal = {r["client_order_id"]: r for r in d.journal_orders()}
    refused = {r["client_order_id"] for r in d.journal_rejections()}
    record = d.exchange()
    placed = collections.Counter(s.client_order_id for s in record.submits if not s.duplicate)
    fill_ids = collections.Counter(f.fill_id for f in record.fills)
    filled: dict[str, float] = collections.defaultdict(float)
    for f in record.fills:
        filled[f.client_order_id] += f.qty
    lost = [c for c in coids if c not in journal and c not in refused]
    over_filled = [c for c, o in record.orders.items() if filled[c] > o.qty + 1e-9]
    mismatched = [c for c, row in journal.items() if c in record.orders
                  and row["status"] in ("filled", "canceled", "rejected")
                  and abs(float(row["filled_qty"]) - filled[c]) > 1e-9]
    return {
        "intents": len(coids),
        "sent": sum(1 for c in coids if c in record.orders),
        "refused": sum(1 for c in coids if c in refused),
        "lost": len(lost),
        "duplicated": sum(n - 1 for n in placed.values() if n > 1) + sum(n - 1 for n in fill_ids.values() if n > 1)
        + len(over_filled),
        "unresolved": len(pending),
        "journal_vs_exchange_mismatches": len(mismatched),
        "examples": {"lost": lost[:3], "unresolved": pending[:3], "mismatched": mismatched[:3]},
    }


def assert_clean(figures: dict[str, Any]) -> None:
    bad = {k: figures[k] for k in ("lost", "duplicated", "unresolved", "journal_vs_exchange_mismatches",
                                   "fail_closed_violations", "non_leader_writes", "executor_lost_halts")
           if figures.get(k)}
    assert not bad, (bad, figures)
