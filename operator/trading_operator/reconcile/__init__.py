"""Reconcilers: one module per kind (``session``, ``policy``, ``backup``), each with the same shape.

``decide`` is pure (observed state in, the status to write and the Events to post out), so the logic
is unit-tested without a client (tests/operator/test_decide.py; ``tests/test_layers.py`` checks that
the session's ``decide`` and every step it calls stay synchronous and client-free). ``reconcile``
is the one async function per kind that does the I/O around it: read what ``decide`` needs, apply
children, write status. When a session is reconciled is ``trading_operator.loop``'s business.
"""
