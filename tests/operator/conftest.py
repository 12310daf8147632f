"""The operator, run as it runs in production (``python -m trading_operator``), against the real control plane."""

from __future__ import annotations

from tests.fixtures.api import Api  # noqa: F401 - old home of Api, for test code written before the move
from tests.fixtures.operator import operator_fixture
from tests.fixtures.waiting import eventually_sync as wait_for  # noqa: F401 - likewise

operator = operator_fixture()
