"""Position exits (risk.exits): which positions close, by how much, and that a repeat is the same order."""

from __future__ import annotations

from trading_operator.api.riskpolicy import PositionExits
from trading_workers.domain import Position, Side
from trading_workers.risk.exits import decide_exits, update_best

ON = {"enabled": True}


def exits(**kw: float) -> PositionExits:
    return PositionExits.model_validate({**ON, **{k: v for k, v in kw.items()}})


def test_off_by_default_and_nothing_without_a_trigger() -> None:
    long = {"AAPL": Position("AAPL", 10, 100.0)}
    assert decide_exits(PositionExits(stop_loss_pct=1), long, {"AAPL": 50.0}, {}) == []
    assert decide_exits(exits(stop_loss_pct=5, take_profit_pct=5), long, {"AAPL": 101.0}, {}) == []


def test_stop_loss_and_take_profit_close_the_whole_position_both_ways() -> None:
    long, short = Position("AAPL", 10, 100.0), Position("MSFT", -4, 200.0)
    got = decide_exits(exits(stop_loss_pct=5, take_profit_pct=10), {"AAPL": long, "MSFT": short},
                       {"AAPL": 94.9, "MSFT": 179.0}, {})
    by_symbol = {e.intent.symbol: e for e in got}
    assert (by_symbol["AAPL"].rule, by_symbol["AAPL"].intent.side, by_symbol["AAPL"].intent.qty) == (
        "stopLoss", Side.SELL, 10)
    # A short that fell 10.5 %: in its favour, take profit, bought back.
    assert (by_symbol["MSFT"].rule, by_symbol["MSFT"].intent.side, by_symbol["MSFT"].intent.qty) == (
        "takeProfit", Side.BUY, 4)


def test_trailing_stop_trails_the_best_price() -> None:
    best: dict[str, float] = {}
    positions = {"AAPL": Position("AAPL", 10, 100.0)}
    for mark in (100.0, 110.0, 108.0):
        update_best(best, positions, {"AAPL": mark})
    assert best == {"AAPL": 110.0}
    assert decide_exits(exits(trailing_stop_pct=3), positions, {"AAPL": 108.0}, best) == []
    got = decide_exits(exits(trailing_stop_pct=3), positions, {"AAPL": 106.0}, best)
    assert [e.rule for e in got] == ["trailingStop"]
    update_best(best, {"AAPL": Position("AAPL", 0, 0.0)}, {"AAPL": 106.0})
    assert best == {}


def test_gross_exposure_cap_cuts_the_largest_position_by_the_excess() -> None:
    positions = {"AAPL": Position("AAPL", 10, 100.0), "MSFT": Position("MSFT", 2, 200.0)}
    got = decide_exits(exits(max_gross_exposure=1_000), positions, {"AAPL": 100.0, "MSFT": 200.0}, {})
    assert [(e.rule, e.intent.symbol, e.intent.side, e.intent.qty) for e in got] == [
        ("grossExposure", "AAPL", Side.SELL, 4)]


def test_the_same_position_gets_the_same_signal_and_a_changed_one_another() -> None:
    policy = exits(stop_loss_pct=1)
    first = decide_exits(policy, {"AAPL": Position("AAPL", 10, 100.0)}, {"AAPL": 90.0}, {})
    again = decide_exits(policy, {"AAPL": Position("AAPL", 10, 100.0)}, {"AAPL": 80.0}, {})
    other = decide_exits(policy, {"AAPL": Position("AAPL", 7, 100.0)}, {"AAPL": 80.0}, {})
    assert first[0].intent.signal_id == again[0].intent.signal_id  # a restarted risk worker: the same order
    assert other[0].intent.signal_id != first[0].intent.signal_id
