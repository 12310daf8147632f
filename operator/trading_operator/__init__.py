"""trading_operator: a kopf operator that runs automated trading sessions.

Layers, top to bottom: ``handlers`` (every kopf decorator, thin) -> ``loop`` (when a session is
reconciled) -> ``reconcile`` (per kind: a pure ``decide`` and the I/O around it) -> ``build`` (pure
manifest builders) -> ``api`` (the pydantic models: the contract, shared with the workers). Beside
them: ``kube`` (the client), ``errors`` (the taxonomy), ``metrics``, ``leader``, ``settings``.
Lower layers never import higher ones, ``api`` and ``build`` reach no client, and the workers import
only ``api``: ``tests/test_layers.py`` checks it.
"""
