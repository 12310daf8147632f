"""Who halted, who resumed: decide() copies the identities the API server stamped (names.ANNOTATION_*)
into status and Events, and says nothing when none was stamped (the pure half; the stamping itself is
tests/security/test_identity_admission.py, the whole path tests/operator/test_who_halted_cluster.py)."""

from __future__ import annotations

from tests.operator.test_decide import SessionBuilder, decide
from trading_operator import names
from trading_operator.api.riskpolicy import RiskPolicy
from trading_operator.api.session import TradingSession


def _annotated(ts: TradingSession, **annotations: str) -> TradingSession:
    ts.metadata.annotations.update(annotations)
    return ts


def test_a_user_halt_names_who_set_spec_halted_and_the_resume_names_who_resumed() -> None:
    ts = _annotated(SessionBuilder().phase("MarketOpen").with_spec(halted=True, haltReason="desk").build(),
                    **{names.ANNOTATION_HALT_BY: "alice@desk"})
    d = decide(ts)
    assert d.status.halt is not None and d.status.halt.requested_by == "alice@desk"
    assert any(e.reason == "Halted" and "(requested by alice@desk)" in e.message for e in d.events), d.events

    resumed = SessionBuilder().halt(source="User", halt_id="h-1").with_spec(halted=False).build()
    d = decide(_annotated(resumed, **{names.ANNOTATION_RESUME_BY: "bob@desk"}))
    assert d.status.halt is None and d.status.last_halt is not None
    assert d.status.last_halt.resume_requested_by == "bob@desk"
    assert any(e.reason == "Resumed" and "(resume requested by bob@desk)" in e.message for e in d.events), d.events


def test_a_policy_halt_names_who_pulled_the_kill_switch() -> None:
    pol = RiskPolicy.model_validate({"metadata": {"name": "p", "generation": 2,
                                                  "annotations": {names.ANNOTATION_MODE_BY: "risk-owner"}},
                                     "spec": {"mode": "Halted"}})
    d = decide(SessionBuilder().phase("MarketOpen").build(), pol)
    assert d.status.halt is not None and d.status.halt.source == "Policy"
    assert d.status.halt.requested_by == "risk-owner"


def test_a_cleared_reducing_latch_names_who_cleared_it() -> None:
    ts = _annotated(SessionBuilder().phase("MarketOpen").reducing(rid="r-1").with_spec(clearReducingId="r-1").build(),
                    **{names.ANNOTATION_CLEAR_REDUCING_BY: "carol"})
    d = decide(ts)
    assert d.status.reducing is None and d.status.last_reducing is not None
    assert d.status.last_reducing.clear_requested_by == "carol"


def test_without_a_stamp_nobody_is_named() -> None:
    d = decide(SessionBuilder().phase("MarketOpen").with_spec(halted=True).build())
    assert d.status.halt is not None and d.status.halt.requested_by is None
    assert not any("requested by" in e.message for e in d.events)
