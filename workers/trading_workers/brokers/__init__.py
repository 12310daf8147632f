"""Broker adapters: ``simulated`` (embedded default) and ``alpaca`` (alpaca-py), behind one protocol."""
