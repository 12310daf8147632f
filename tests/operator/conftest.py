"""The operator, run as it runs in production (``python -m trading_operator``), against the real control plane."""

from __future__ import annotations

from tests.fixtures.operator import operator_fixture

operator = operator_fixture()
