"""Pure parts of the workers: strategies, risk figures and limits, the halt gate, bus codecs, price process, logs."""

from __future__ import annotations

import io
import json
import logging
import math

import pytest

from trading_operator.api.riskpolicy import CircuitBreaker, Limits
from trading_workers import bus as bus_mod
from trading_workers.brokers.simulated import PriceProcess, initial_price
from trading_workers.domain import Fill, OrderIntent, OrderType, Quote, Side, Signal
from trading_workers.errors import ConfigError, MalformedMessage, PermanentError, TransientError
from trading_workers.executor import derive_gate
from trading_workers.pretrade import TradingState
from trading_workers.risk import metrics
from trading_workers.risk.engine import Figures, evaluate, worst
from trading_workers.runtime.logs import JsonFormatter, log_context, redact
from trading_workers.runtime.settings import Settings
from trading_workers.strategy import make_strategy


def quotes(symbol: str, prices: list[float]) -> list[Quote]:
    return [Quote(symbol, p, float(i), i + 1) for i, p in enumerate(prices)]


# --------------------------------------------------------------------------- strategies

def test_momentum_goes_long_on_a_rise_then_flips_short_on_a_fall() -> None:
    strategy = make_strategy("momentum", {"lookback": 3, "threshold": 0.01, "orderQty": 5})
    out = [strategy.on_quote(q) for q in quotes("AAPL", [100, 100, 100, 103, 104, 104, 100, 99])]
    intents = [i for i in out if i is not None]
    assert [(i.side, i.qty) for i in intents] == [(Side.BUY, 5), (Side.SELL, 10)]
    assert intents[0].signal_id == "momentum:AAPL:4"


def test_mean_reversion_fades_a_stretch_and_exits_near_the_mean() -> None:
    strategy = make_strategy("mean-reversion", {"lookback": 4, "threshold": 1.0, "exitZ": 0.5, "orderQty": 2})
    prices = [100, 101, 99, 100, 108, 100.2, 100, 100.1, 90]
    intents = [i for q in quotes("MSFT", prices) if (i := strategy.on_quote(q)) is not None]
    assert [(i.side, i.qty) for i in intents][:2] == [(Side.SELL, 2), (Side.BUY, 2)]
    assert intents[-1].side is Side.BUY


def test_strategy_ignores_redelivered_quotes_and_keeps_ids_deterministic() -> None:
    a = make_strategy("momentum", {"lookback": 2, "threshold": 0.001})
    b = make_strategy("momentum", {"lookback": 2, "threshold": 0.001})
    stream = quotes("NVDA", [10, 10, 11, 12])
    ia = [a.on_quote(q) for q in stream]
    ib = [b.on_quote(q) for q in [*stream[:3], stream[2], stream[3]]]  # a repeat of seq 3
    assert [i.signal_id for i in ia if i] == [i.signal_id for i in ib if i]


@pytest.mark.parametrize("params", [{"lookback": 1}, {"lookback": 2.5}, {"orderQty": 0}, {"threshold": "x"},
                                    {"threshold": True}])
def test_bad_strategy_params_are_config_errors(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_strategy("momentum", params)
    with pytest.raises(ConfigError):
        make_strategy("nope", {})


# --------------------------------------------------------------------------- risk figures

def test_pnl_drawdown_concentration_margin() -> None:
    assert metrics.daily_pnl_pct(970_000, 1_000_000) == pytest.approx(-3.0)
    assert metrics.drawdown_pct(95, 100) == pytest.approx(5.0)
    assert metrics.drawdown_pct(101, 100) == 0.0
    assert metrics.concentration_pct({"A": 300, "B": -100, "C": 100}) == pytest.approx(60.0)
    assert metrics.concentration_pct({}) == 0.0
    assert metrics.margin_usage_pct(800_000, 500_000) == pytest.approx(80.0)


def test_historical_var_is_the_tail_loss_of_revalued_positions() -> None:
    history = {"A": [100.0 * (1 + 0.01 * ((i % 5) - 2)) for i in range(101)]}
    scenarios = metrics.pnl_scenarios({"A": 10_000.0}, history, lookback=100)
    assert len(scenarios) == 100
    var = metrics.historical_var_pct(scenarios, equity=100_000, confidence=0.95)
    worst_loss = -min(scenarios)
    assert 0 < var <= worst_loss / 100_000 * 100 + 1e-9
    assert metrics.historical_var_pct([], 1, 0.95) == 0.0
    assert metrics.quantile([1, 2, 3, 4], 0.5) == pytest.approx(2.5)


def test_win_rate_counts_closing_trades() -> None:
    def fill(side: Side, qty: float, price: float) -> Fill:
        return Fill("c", "A", side, qty, price, 0.0)

    fills = [fill(Side.BUY, 10, 100), fill(Side.SELL, 10, 101),   # win
             fill(Side.SELL, 5, 100), fill(Side.BUY, 5, 102),     # loss
             fill(Side.BUY, 4, 100), fill(Side.SELL, 2, 103), fill(Side.SELL, 2, 99)]  # win, loss
    pct, trades = metrics.win_rate(fills)
    assert trades == 4 and pct == pytest.approx(50.0)


def test_correlation() -> None:
    up = [100 + i + (i % 3) for i in range(30)]
    history = {"A": up, "B": [2 * p for p in up], "C": [300 - p for p in up]}
    assert metrics.average_pairwise_correlation(history, ["A", "B"]) == pytest.approx(1.0)
    assert metrics.average_pairwise_correlation(history, ["A", "C"]) < -0.9  # type: ignore[operator]
    assert metrics.average_pairwise_correlation(history, ["A"]) is None


def figures(**kw: object) -> Figures:
    base: dict[str, object] = {"equity": 1_000_000.0, "start_equity": 1_000_000.0, "peak_equity": 1_000_000.0,
                               "daily_pnl_pct": 0.0, "drawdown_pct": 0.0}
    return Figures(**{**base, **kw})  # type: ignore[arg-type]


def test_daily_loss_reduces_then_halts() -> None:
    limits, breaker = Limits(), CircuitBreaker()
    assert evaluate(limits, breaker, figures(daily_pnl_pct=-1.0)) == []
    reduce = evaluate(limits, breaker, figures(daily_pnl_pct=-2.5))
    assert [(b.rule, b.action, b.reason) for b in reduce] == [("dailyLoss", "Reduce", "DailyLossReduce")]
    halt = evaluate(limits, breaker, figures(daily_pnl_pct=-3.2))
    assert [(b.rule, b.action, b.reason) for b in halt] == [("dailyLoss", "Halt", "DailyLossHalt")]


def test_every_portfolio_rule_fires_with_its_action() -> None:
    f = figures(drawdown_pct=12.0, exposures={"A": 600.0, "B": 100.0}, concentration_pct=85.7, var_pct=6.0,
                var_scenarios=50, margin_usage_pct=90.0, win_rate_pct=30.0, closed_trades=25, correlation=0.95,
                index_drop_pct=8.0)
    got = {b.rule: b.action for b in evaluate(Limits(), CircuitBreaker(), f)}
    assert got == {"maxDrawdown": "Halt", "concentration": "Reduce", "var": "Reduce", "marginUsage": "Reduce",
                   "winRateFloor": "Alert", "correlationSpike": "Alert", "circuitBreaker": "Reduce"}
    assert worst(evaluate(Limits(), CircuitBreaker(), f)).action == "Halt"  # type: ignore[union-attr]
    # concentration needs two positions; VaR needs 20 scenarios; win rate needs minTrades
    quiet = figures(exposures={"A": 600.0}, concentration_pct=100.0, var_pct=50.0, var_scenarios=5,
                    win_rate_pct=0.0, closed_trades=3)
    assert evaluate(Limits(), CircuitBreaker(), quiet) == []


def test_every_rule_can_be_disabled_the_same_way() -> None:
    f = figures(daily_pnl_pct=-5.0, drawdown_pct=20.0, exposures={"A": 600.0, "B": 400.0}, concentration_pct=60.0,
                var_pct=9.0, var_scenarios=100, margin_usage_pct=95.0, win_rate_pct=10.0, closed_trades=50,
                correlation=0.99, index_drop_pct=8.0, stale_symbols=("A",), max_quote_age=120.0)
    assert len(evaluate(Limits(), CircuitBreaker(), f)) == 9
    off = Limits.model_validate({name: {"enabled": False} for name in {
        "dailyLoss", "maxDrawdown", "concentration", "var", "marginUsage", "winRateFloor", "correlationSpike",
        "dataFreshness"}})
    assert evaluate(off, CircuitBreaker(enabled=False), f) == []


def test_model_accuracy_alerts_below_55_and_takes_the_critical_action_below_50() -> None:
    on = Limits.model_validate({"modelAccuracy": {"enabled": True, "minOutcomes": 100}})
    assert evaluate(Limits(), CircuitBreaker(), figures(model_accuracy_pct=30.0, model_outcomes=500)) == []  # off
    assert evaluate(on, CircuitBreaker(), figures(model_accuracy_pct=59.0, model_outcomes=500)) == []
    assert evaluate(on, CircuitBreaker(), figures(model_accuracy_pct=40.0, model_outcomes=50)) == []   # too few
    alert = evaluate(on, CircuitBreaker(), figures(model_accuracy_pct=53.0, model_outcomes=500))
    assert [(b.rule, b.action, b.threshold) for b in alert] == [("modelAccuracy", "Alert", 55.0)]
    critical = evaluate(on, CircuitBreaker(), figures(model_accuracy_pct=41.0, model_outcomes=500))
    assert [(b.rule, b.action, b.threshold) for b in critical] == [("modelAccuracy", "Reduce", 50.0)]
    assert "critical" in critical[0].message and critical[0].reason == "ModelAccuracyReduce"
    halting = Limits.model_validate({"modelAccuracy": {"enabled": True, "criticalAction": "Halt"}})
    assert evaluate(halting, CircuitBreaker(), figures(model_accuracy_pct=41.0, model_outcomes=500))[0].action == "Halt"


# --------------------------------------------------------------------------- the halt gate

def session(spec: dict[str, object] | None = None, status: dict[str, object] | None = None) -> dict[str, object]:
    return {"metadata": {"generation": 4, "resourceVersion": "10"}, "spec": spec or {},
            "status": {"phase": "MarketOpen", **(status or {})}}


def test_gate_open_only_when_live_and_in_an_order_phase() -> None:
    assert not derive_gate(session()).halted
    assert derive_gate(session()).state is TradingState.ACTIVE
    for phase in ("PreMarket", "AfterHours"):
        assert not derive_gate(session(status={"phase": phase})).halted
        assert derive_gate(session(status={"phase": phase})).extended_hours   # policy extendedHours applies
    assert not derive_gate(session()).extended_hours
    for phase in ("Initializing", "MarketClose", "Halted", "Error", None):
        gate = derive_gate(session(status={"phase": phase}))
        assert gate.halted and gate.halt_key is None  # not a halt: no onHalt action


@pytest.mark.parametrize(("spec", "status", "policy", "key"), [
    ({"halted": True, "haltReason": "x"}, {}, None, "spec:4"),
    ({}, {"halt": {"active": True, "source": "Risk", "reason": "daily loss", "id": "h-abc"}}, None, "h-abc"),
    ({}, {}, "Halted", "policy"),
])
def test_every_halt_source_closes_the_gate(spec: dict[str, object], status: dict[str, object],
                                           policy: str | None, key: str) -> None:
    gate = derive_gate(session(spec, status), policy)
    assert gate.halted and gate.state is TradingState.HALTED and gate.halt_key == key


def test_a_gate_that_is_not_a_halt_refuses_orders_without_on_halt() -> None:
    gate = derive_gate(session(status={"tradingState": "Halted", "conditions": [
        {"type": "Ready", "status": "False", "reason": "PreMarketChecksFailing", "message": "broker"}]}))
    assert gate.halted and gate.halt_key is None and "PreMarketChecksFailing" in gate.reason


def test_gate_reducing_and_flatten_and_deleted() -> None:
    assert derive_gate(session(status={"tradingState": "Reducing"})).state is TradingState.REDUCING
    assert derive_gate(session(status={"reducing": {"id": "r-1", "source": "Risk"}})).state is TradingState.REDUCING
    assert derive_gate(session(), "Reducing").state is TradingState.REDUCING
    flatten = derive_gate(session(status={"halt": {"active": True, "action": "Flatten", "reason": "drawdown",
                                                   "id": "h-1"}}))
    assert flatten.flatten and flatten.halt_id == "h-1"
    # The action is a field: a reason that merely starts with "Flatten:" flattens nothing.
    assert not derive_gate(session(status={"halt": {"active": True, "reason": "Flatten: x", "id": "h-2"}})).flatten
    tripped = derive_gate(session(status={"risk": {"circuitBreaker": {"tripped": True, "limitScale": 0.3}}}))
    assert tripped.limit_scale == 0.3 and not tripped.halted
    assert derive_gate(None).halted
    inactive = derive_gate(session(status={"halt": {"active": False, "id": "h-old"}}))
    assert not inactive.halted


# --------------------------------------------------------------------------- bus codecs

def test_codecs_round_trip() -> None:
    quote = Quote("BRK.B", 412.5, 1.5, 9)
    assert bus_mod.decode_quote(bus_mod.encode_quote(quote)) == quote
    intent = OrderIntent("AAPL", Side.SELL, 3, OrderType.LIMIT, 99.5, "s-1")
    assert bus_mod.decode_intent(bus_mod.encode_intent(intent)) == intent
    signal = Signal("AAPL", Side.BUY, 2, "model:AAPL:3", score=0.4, expected_return=0.01, price=101.5, ts=2.0,
                    seq=3, model="builtin://default")
    assert bus_mod.decode_signal(bus_mod.encode_signal(signal)) == signal
    assert signal.intent() == OrderIntent("AAPL", Side.BUY, 2, signal_id="model:AAPL:3")


def test_one_key_convention_on_every_stream() -> None:
    """camelCase JSON keys, as in the Kubernetes API: no snake_case key on any stream."""
    messages = [bus_mod.encode_quote(Quote("AAPL", 1.0, 0.0, 1)),
                bus_mod.encode_signal(Signal("AAPL", Side.BUY, 1, "s-1", expected_return=0.1)),
                bus_mod.encode_intent(OrderIntent("AAPL", Side.BUY, 1, OrderType.LIMIT, 1.0, "s-1"))]
    for fields in messages:
        assert set(fields) == {"id", "data"}
        assert not [k for k in json.loads(fields["data"]) if "_" in k]
    assert "signalId" in json.loads(messages[1]["data"]) and "signalId" in json.loads(messages[2]["data"])


@pytest.mark.parametrize("fields", [
    {}, {"data": "nope"}, {"data": "[]"}, {"data": json.dumps({"symbol": "aapl", "price": 1})},
    {"data": json.dumps({"symbol": "AAPL", "price": 0})}, {"data": json.dumps({"symbol": "AAPL", "price": "1"})},
    {"data": json.dumps({"symbol": "AAPL", "price": 1, "seq": 1.5})},
])
def test_malformed_quotes(fields: dict[str, str]) -> None:
    with pytest.raises(MalformedMessage):
        bus_mod.decode_quote(fields)


@pytest.mark.parametrize("data", [
    {"symbol": "AAPL", "side": "buy", "qty": 1},                                  # no signalId
    {"symbol": "AAPL", "side": "short", "qty": 1, "signalId": "x"},
    {"symbol": "AAPL", "side": "buy", "qty": True, "signalId": "x"},
    {"symbol": "AAPL", "side": "buy", "qty": 1, "signalId": "x", "orderType": "stop"},
    {"symbol": "AAPL", "side": "buy", "qty": 1, "signalId": "x", "orderType": "limit"},  # no limit price
    {"symbol": "TOOLONGSYMBOLNAME", "side": "buy", "qty": 1, "signalId": "x"},
])
def test_malformed_intents(data: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage):
        bus_mod.decode_intent({"data": json.dumps(data)})
    assert issubclass(MalformedMessage, PermanentError) and not issubclass(MalformedMessage, TransientError)


# --------------------------------------------------------------------------- price process

def test_price_process_is_deterministic_and_seeded() -> None:
    a, b = PriceProcess(7, 0.02, 60), PriceProcess(7, 0.02, 60)
    path = [a.price("AAPL", k) for k in range(200)]
    assert path == [b.price("AAPL", k) for k in range(200)]
    assert b.price("AAPL", 50) == path[50]   # random access replays the same path
    assert path[0] == initial_price(7, "AAPL") and 20 <= path[0] <= 500
    assert PriceProcess(8, 0.02, 60).price("AAPL", 100) != path[100]
    assert a.price("MSFT", 100) != path[100]
    returns = [math.log(path[i + 1] / path[i]) for i in range(199)]
    sigma = (sum(r * r for r in returns) / len(returns)) ** 0.5
    assert 0.3 * a.sigma < sigma < 3 * a.sigma


# --------------------------------------------------------------------------- runtime pieces

def test_json_logs_carry_session_and_client_order_id_and_mask_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_SECRET_KEY", "s3cr3t-value")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter({"session": "ns/demo", "role": "executor"}))
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.propagate = False
    with log_context(client_order_id="tp-123"):
        logger.warning("sent with key s3cr3t-value to postgresql://u:hunter2@db/x", extra={"qty": 3})
    line = json.loads(stream.getvalue())
    assert line["session"] == "ns/demo" and line["client_order_id"] == "tp-123" and line["qty"] == 3
    assert "s3cr3t-value" not in line["msg"] and "hunter2" not in line["msg"]
    assert redact("redis://:pw@h:1/0", []) == "redis://:***@h:1/0"
    assert redact("https://host:8443/x", []) == "https://host:8443/x"


def test_settings_from_env() -> None:
    s = Settings.from_env("executor", "ns/demo", env={"TRADING_HTTP_PORT": "9100",
                                                      "TRADING_JOURNAL_DSN": "postgresql://x"})
    assert (s.namespace, s.name, s.http_port, s.config_path) == ("ns", "demo", 9100, None)
    for bad in ("demo", "a/b/c", "/x"):
        with pytest.raises(ConfigError):
            Settings.from_env("executor", bad, env={})
    with pytest.raises(ConfigError):
        Settings.from_env("executor", "a/b", env={"TRADING_HTTP_PORT": "http"})


def test_cli_parses_roles_and_refuses_unknown() -> None:
    from trading_workers.cli import parser

    args = parser().parse_args(["worker", "executor", "--session", "ns/demo"])
    assert (args.role, args.session) == ("executor", "ns/demo")
    with pytest.raises(SystemExit):
        parser().parse_args(["worker", "trader"])


def test_make_broker_picks_the_session_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from trading_operator.api.session import BrokerSpec, SecretRef, StrategySpec
    from trading_operator.api.workerconfig import SessionIdentity, WorkerConfig
    from trading_workers.brokers.simulated import SimulatedExchange
    from trading_workers.executor import make_broker

    def config(broker: BrokerSpec) -> WorkerConfig:
        return WorkerConfig(session=SessionIdentity(namespace="ns", name="s"), symbols=["AAPL"], broker=broker,
                            strategy=StrategySpec(), calendar={}, clock={}, on_halt="CancelOpenOrders",  # type: ignore[arg-type]
                            risk_policy_name="p", clock_anchor=dt.datetime.now(dt.UTC))

    sim = make_broker(config(BrokerSpec()), None, "tp:{ns/s}")
    assert isinstance(sim, SimulatedExchange) and sim.capabilities.durable_cursor
    alpaca_spec = BrokerSpec(kind="alpaca", credentials_secret_ref=SecretRef(name="keys"))
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError):
        make_broker(config(alpaca_spec), None, "tp:{ns/s}")
    monkeypatch.setenv("APCA_API_KEY_ID", "PKTESTKEYID")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "test-secret-value")
    broker = make_broker(config(alpaca_spec), None, "tp:{ns/s}")
    assert broker.name == "alpaca" and getattr(broker, "paper", None) is True
    assert "test-secret-value" not in repr(broker)
