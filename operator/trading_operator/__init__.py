"""trading_operator: a kopf operator that runs automated trading sessions.

Layers, top to bottom: ``handlers`` (every kopf decorator, thin) ->
``reconcile`` (steps that read state and decide) -> ``build`` (pure
manifest builders) -> ``api`` (the pydantic models: the contract).
Lower layers never import higher ones.
"""
