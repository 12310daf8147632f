"""trading_workers: the processes the operator's Deployments run.

May import ``trading_operator.api`` (the contract) and nothing else of the operator.
"""
