"""The session state machine, as data.

The same table is enforced twice: by the operator (``can_transition``) and
by the API server, through a CEL transition rule generated from
``TRANSITIONS`` into the CRD (see ``crdgen``). No client, not even a buggy
worker, can write a transition that is not listed here.

Base table (from the runbooks)::

    Initializing -> PreMarket
    PreMarket    -> MarketOpen | Halted
    MarketOpen   -> MarketClose | Halted
    MarketClose  -> AfterHours
    AfterHours   -> Initializing
    Halted       -> MarketOpen | Error
    Error        -> Initializing

Extensions (argued in docs/decisions/0002-state-machine-extensions.md):

* Halted is reachable from every phase except Error, because a halt is a
  latch that must show wherever orders could be sent (AfterHours trades
  extended hours) and a halt raised while Initializing must still be
  visible when the day starts.
* Halted resumes into whatever phase the calendar dictates at resume time
  (PreMarket, MarketOpen, MarketClose, AfterHours or Initializing), not
  only MarketOpen.
* Error is reachable from every phase: the operator must be able to say
  "I cannot run this session" from anywhere.
* PreMarket -> Initializing: a day whose pre-market checklist never passed
  ends without opening (the session waits for the next day rather than
  sitting in an order phase overnight).
* No shortcut from Initializing into the trading day: a session started
  mid-day walks forward one step per reconcile, so the pre-market checklist
  (PreMarket -> MarketOpen gate) is always on the path.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    INITIALIZING = "Initializing"
    PRE_MARKET = "PreMarket"
    MARKET_OPEN = "MarketOpen"
    MARKET_CLOSE = "MarketClose"
    AFTER_HOURS = "AfterHours"
    HALTED = "Halted"
    ERROR = "Error"


P = Phase

BASE_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    P.INITIALIZING: frozenset({P.PRE_MARKET}),
    P.PRE_MARKET: frozenset({P.MARKET_OPEN, P.HALTED}),
    P.MARKET_OPEN: frozenset({P.MARKET_CLOSE, P.HALTED}),
    P.MARKET_CLOSE: frozenset({P.AFTER_HOURS}),
    P.AFTER_HOURS: frozenset({P.INITIALIZING}),
    P.HALTED: frozenset({P.MARKET_OPEN, P.ERROR}),
    P.ERROR: frozenset({P.INITIALIZING}),
}

_CALENDAR_PHASES = frozenset({P.INITIALIZING, P.PRE_MARKET, P.MARKET_OPEN, P.MARKET_CLOSE, P.AFTER_HOURS})


def _extended() -> dict[Phase, frozenset[Phase]]:
    table = {k: set(v) for k, v in BASE_TRANSITIONS.items()}
    for phase in Phase:
        if phase not in (P.ERROR, P.HALTED):
            table[phase].add(P.HALTED)
        if phase is not P.ERROR:
            table[phase].add(P.ERROR)
    table[P.HALTED] |= _CALENDAR_PHASES
    table[P.PRE_MARKET].add(P.INITIALIZING)
    return {k: frozenset(v) for k, v in table.items()}


TRANSITIONS: dict[Phase, frozenset[Phase]] = _extended()

#: Phases in which an executor may send new orders (if not halted).
ORDER_PHASES = frozenset({P.PRE_MARKET, P.MARKET_OPEN, P.AFTER_HOURS})

INITIAL_PHASE = P.INITIALIZING


def can_transition(src: Phase | str | None, dst: Phase | str) -> bool:
    """Whether ``src -> dst`` is allowed. Staying put is always allowed; the first phase must be Initializing."""
    dst = Phase(dst)
    if src is None:
        return dst is INITIAL_PHASE
    src = Phase(src)
    return src is dst or dst in TRANSITIONS[src]


class IllegalTransition(ValueError):
    """A phase change that the state machine does not allow."""

    def __init__(self, src: Phase | str | None, dst: Phase | str) -> None:
        super().__init__(f"illegal phase transition {src} -> {dst}")
        self.src, self.dst = src, dst


def check_transition(src: Phase | str | None, dst: Phase | str) -> None:
    if not can_transition(src, dst):
        raise IllegalTransition(src, dst)


def cel_transition_rule() -> str:
    """CEL for the ``status.phase`` transition rule, generated from ``TRANSITIONS``."""
    clauses = ["self == oldSelf"]
    for src in Phase:
        targets = ", ".join(f"'{d.value}'" for d in sorted(TRANSITIONS[src], key=list(Phase).index))
        clauses.append(f"(oldSelf == '{src.value}' && self in [{targets}])")
    return " || ".join(clauses)
