"""Pre-trade checks (pure): every check refuses what it should, with its reason code; valid orders pass."""

from __future__ import annotations

import pytest

from trading_operator.api.riskpolicy import OrderControls
from trading_workers.pretrade import REJECTIONS, CheckLimits, PreTradeChecks, Reason, TradingState

LIMITS = CheckLimits(max_order_notional=10_000, max_position_notional=20_000, max_orders_per_second=5,
                     price_collar_pct=5, duplicate_window_seconds=1, max_open_orders=3,
                     restricted_symbols=frozenset({"GME"}))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def checks(clock: Clock) -> PreTradeChecks:
    return PreTradeChecks(LIMITS, clock=clock)


def check(checks: PreTradeChecks, symbol: str = "AAPL", side: int = 1, qty: float = 10, limit: float | None = None,
          last: float | None = 100.0, position: float = 0.0, open_orders: int = 0,
          state: TradingState = TradingState.ACTIVE) -> Reason | None:
    return checks.check(symbol, side, qty, limit, last, position, open_orders, state)


def test_a_valid_order_passes(checks: PreTradeChecks) -> None:
    assert check(checks) is None
    assert check(checks, side=-1, qty=11, limit=101.0) is None


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"state": TradingState.HALTED}, Reason.TRADING_HALTED),
    ({"state": TradingState.REDUCING}, Reason.REDUCE_ONLY),                          # opens a position
    ({"state": TradingState.REDUCING, "position": 5}, Reason.REDUCE_ONLY),           # adds to a long
    ({"state": TradingState.REDUCING, "position": 5, "side": -1}, Reason.REDUCE_ONLY),  # flips long to short
    ({"symbol": "GME"}, Reason.RESTRICTED_SYMBOL),
    ({"qty": 0}, Reason.INVALID_ORDER),
    ({"qty": -3}, Reason.INVALID_ORDER),
    ({"qty": float("nan")}, Reason.INVALID_ORDER),
    ({"qty": float("inf")}, Reason.INVALID_ORDER),
    ({"side": 0}, Reason.INVALID_ORDER),
    ({"limit": -1.0}, Reason.INVALID_ORDER),
    ({"last": None}, Reason.NO_REFERENCE_PRICE),
    ({"last": 0.0}, Reason.NO_REFERENCE_PRICE),
    ({"limit": 106.0}, Reason.PRICE_COLLAR),
    ({"limit": 94.0, "side": -1}, Reason.PRICE_COLLAR),
    ({"qty": 101}, Reason.MAX_ORDER_NOTIONAL),
    ({"qty": 90, "position": 150}, Reason.MAX_POSITION),
    ({"qty": 90, "position": -150, "side": -1}, Reason.MAX_POSITION),
    ({"open_orders": 3}, Reason.MAX_OPEN_ORDERS),
])
def test_each_check_rejects_with_its_reason(checks: PreTradeChecks, kwargs: dict[str, object],
                                            reason: Reason) -> None:
    before = REJECTIONS.labels(reason.value)._value.get()
    assert check(checks, **kwargs) is reason  # type: ignore[arg-type]
    assert REJECTIONS.labels(reason.value)._value.get() == before + 1


def test_reducing_allows_orders_that_reduce_exposure(checks: PreTradeChecks) -> None:
    assert check(checks, state=TradingState.REDUCING, position=10, side=-1, qty=10) is None
    assert check(checks, state=TradingState.REDUCING, position=-10, side=1, qty=4) is None
    # a reducing order passes the position limit even when the position is above it
    assert check(checks, position=250, side=-1, qty=12) is None


def test_duplicate_within_window_then_allowed_after(checks: PreTradeChecks, clock: Clock) -> None:
    assert check(checks) is None
    clock.now += 0.5
    assert check(checks) is Reason.DUPLICATE_ORDER
    assert check(checks, qty=11) is None          # different quantity: not a duplicate
    assert check(checks, side=-1) is None         # different side
    clock.now += 0.6
    assert check(checks) is None


def test_order_rate_token_bucket(checks: PreTradeChecks, clock: Clock) -> None:
    results = [check(checks, qty=1 + k) for k in range(7)]
    assert results[:5] == [None] * 5 and results[5:] == [Reason.ORDER_RATE] * 2
    clock.now += 0.2  # one token back at 5/s
    assert check(checks, qty=50) is None
    assert check(checks, qty=51) is Reason.ORDER_RATE


def test_rejected_orders_use_no_rate_budget_and_are_not_duplicates(checks: PreTradeChecks) -> None:
    for _ in range(20):
        assert check(checks, symbol="GME") is Reason.RESTRICTED_SYMBOL
    assert check(checks, qty=101) is Reason.MAX_ORDER_NOTIONAL
    assert check(checks, qty=1) is None


def test_limits_from_policy_and_live_update(clock: Clock) -> None:
    controls = OrderControls(max_order_notional=1000, max_orders_per_second=2, restricted_symbols=["TSLA"])
    checks = PreTradeChecks(CheckLimits.from_controls(controls), clock=clock)
    assert check(checks, symbol="TSLA") is Reason.RESTRICTED_SYMBOL
    assert check(checks, qty=11) is Reason.MAX_ORDER_NOTIONAL
    scaled = CheckLimits.from_controls(controls, scale=0.3)
    assert scaled.max_order_notional == pytest.approx(300) and scaled.max_orders_per_second == pytest.approx(0.6)
    checks.update_limits(CheckLimits.from_controls(OrderControls(restricted_symbols=[])))
    assert check(checks, symbol="TSLA", qty=11) is None


def test_duplicate_memory_only_holds_the_window(clock: Clock) -> None:
    checks = PreTradeChecks(CheckLimits(max_orders_per_second=1e6, max_order_notional=1e12,
                                        max_position_notional=1e15), clock=clock)
    for k in range(5000):
        clock.now += 0.01
        assert check(checks, qty=1 + k) is None
    assert len(checks.recent) <= 101  # a 1 s window at 100 orders/s


def test_extended_hours_follow_the_policy(clock: Clock) -> None:
    from trading_operator.api.riskpolicy import ExtendedHours

    def limits(**extended: object) -> PreTradeChecks:
        controls = OrderControls(max_order_notional=10_000, max_position_notional=1e9, max_orders_per_second=1000,
                                 duplicate_window_seconds=0)
        return PreTradeChecks(CheckLimits.from_controls(controls, extended=ExtendedHours(**extended)), clock=clock)

    def ext(c: PreTradeChecks, *, qty: float = 10, limit: float | None = None, market: bool = True,
            extended: bool = True) -> Reason | None:
        return c.check("AAPL", 1, qty, limit, 100.0, 0.0, 0, TradingState.ACTIVE, extended_hours=extended,
                       market=market)

    default = limits()   # as before the field: both phases open to every order
    assert ext(default) is None and ext(default, qty=100) is None
    closed = limits(allowed=False)
    assert ext(closed) is ext(closed, limit=100.0, market=False) is Reason.EXTENDED_HOURS
    assert ext(closed, extended=False) is None               # regular hours are not affected
    limited = limits(limitOrdersOnly=True, maxOrderNotionalScale=0.5)
    assert ext(limited) is Reason.EXTENDED_HOURS              # a market order
    assert ext(limited, limit=100.0, market=False) is None    # a limit order: 1,000 USD
    assert ext(limited, qty=51, limit=100.0, market=False) is Reason.MAX_ORDER_NOTIONAL  # 5,100 > 10,000 x 0.5
    assert ext(limited, qty=51, limit=100.0, market=False, extended=False) is None
    assert ext(limited, extended=False) is None
    # Halted still wins, and the check runs before the others (a restricted symbol is refused for hours first).
    assert limited.check("AAPL", 1, 1, None, 100.0, 0.0, 0, TradingState.HALTED, extended_hours=True,
                         market=True) is Reason.TRADING_HALTED


def test_a_stale_intent_is_refused_before_the_limits_and_zero_turns_the_check_off(clock: Clock) -> None:
    from trading_workers.executor.orders import message_age

    def with_age(max_age: float, age: float | None, state: TradingState = TradingState.ACTIVE) -> Reason | None:
        controls = OrderControls(max_intent_age_seconds=max_age, duplicate_window_seconds=0)
        checks = PreTradeChecks(CheckLimits.from_controls(controls), clock=clock)
        return checks.check("AAPL", 1, 10, None, 100.0, 0.0, 0, state, age=age)

    assert with_age(30.0, 29.9) is None and with_age(30.0, None) is None   # fresh, or no bus time known
    assert with_age(30.0, 30.1) is Reason.STALE_INTENT
    assert with_age(0.0, 3600.0) is None                                    # 0: no age limit
    assert with_age(30.0, 31.0, TradingState.HALTED) is Reason.TRADING_HALTED  # a halt still names itself first
    # A Redis stream id is "<milliseconds>-<sequence>" on the server's clock.
    assert message_age("1764601200000-3", 1764601212.5) == pytest.approx(12.5)
    assert message_age("1764601200000-3", 1764601100.0) == 0.0              # a clock behind: not negative
    assert message_age("not-an-id", 1.0) is None and message_age("12", 1.0) is None
