"""The operator's and the workers' Kubernetes wrappers give an HTTP status the same meaning."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from trading_operator import errors as op_errors
from trading_operator import kube as op_kube
from trading_workers import errors as wk_errors
from trading_workers.runtime.kube import Conflict, Kube, NotFound


async def _workers(status: int) -> Exception:
    kube = Kube.__new__(Kube)  # no credentials needed: only the translation runs

    def fail() -> Any:
        raise ApiException(status=status, reason="x")

    with pytest.raises(wk_errors.TradingError) as info:
        await kube.call("op", fail)
    return info.value


async def test_a_404_is_gone_in_both_neither_transient_nor_permanent() -> None:
    op = op_kube._translate(ApiException(status=404, reason="Not Found"))
    wk = await _workers(404)
    assert isinstance(op, op_errors.NotFound) and isinstance(wk, NotFound)
    assert not isinstance(op, op_errors.TransientError | op_errors.PermanentError)
    assert not isinstance(wk, wk_errors.TransientError | wk_errors.PermanentError)


async def test_a_409_is_a_transient_conflict_in_both() -> None:
    op = op_kube._translate(ApiException(status=409, reason="Conflict"))
    wk = await _workers(409)
    assert isinstance(op, op_errors.ApiConflict) and isinstance(op, op_errors.TransientError)
    assert isinstance(wk, Conflict) and isinstance(wk, wk_errors.TransientError)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_overload_and_server_errors_are_transient_in_both(status: int) -> None:
    assert isinstance(op_kube._translate(ApiException(status=status, reason="x")), op_errors.TransientError)
    assert isinstance(await _workers(status), wk_errors.DependencyUnavailable)
