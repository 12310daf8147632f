"""Who writes which part of a TradingSession's status, and how the writes keep off each other (decision 0015).

No operator runs in this package: the tests drive the operator's reconcile and the writes themselves, with views
made stale on purpose, which a running operator would race.
"""
