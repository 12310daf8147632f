"""Reconcilers: one module per kind, each a readable sequence of steps.

``decide_*`` functions are pure (observed state in, desired status and
actions out) so the logic is unit-tested without a client; the small
``apply`` functions do the I/O.
"""
