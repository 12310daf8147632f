"""Strategies: rule-based (``rules``: momentum, mean-reversion) and the strategy worker role (``worker``).

The torch model strategy lives in ``trading_workers.inference``; its
signals reach the executor through the strategy worker, so the strategy
worker is the one producer of order intents whatever the strategy.
"""

from trading_workers.strategy.rules import MeanReversion, Momentum, RuleStrategy, make_strategy

__all__ = ["MeanReversion", "Momentum", "RuleStrategy", "make_strategy"]
