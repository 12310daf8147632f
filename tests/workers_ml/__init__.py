"""Tests of the torch model strategy, its worker, and the Alpaca adapter (against recorded responses)."""
