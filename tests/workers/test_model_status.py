"""The inference workers' model report against the real API server: ``status.model`` and its Events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.servers import RedisServer
from tests.workers.conftest import SessionHandle
from trading_operator.api.session import ModelStatus
from trading_operator.api.status import ModelState, Reason
from trading_workers.inference.role import InferenceIO
from trading_workers.runtime import Kube, Runtime, Settings

pytestmark = [pytest.mark.cluster, pytest.mark.services]


async def test_the_served_version_and_a_refusal_reach_the_session_status_and_events(
        make_session: Callable[..., SessionHandle], redis_server: RedisServer, control_plane: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig_path))
    session = make_session(symbols=["AAPL"])
    settings = Settings(namespace=session.namespace, name=session.name, role="inference",
                        redis_url=redis_server.url, journal_dsn="", http_port=0, config_path=None)
    io = InferenceIO(Runtime(settings=settings, config=session.config, kube=Kube()))
    try:
        uri = "s3://models/price-mlp/v20261201T150000Z-1a2b3c4d"
        await io.report_model(ModelStatus(uri=uri, state=ModelState.SERVING, version="v20261201T150000Z-1a2b3c4d",
                                          sha256="1a2b3c4d" * 8, verified=True, reason=Reason.MODEL_VERIFIED))
        model = session.status()["model"]
        assert model["state"] == "Serving" and model["version"] == "v20261201T150000Z-1a2b3c4d"
        assert model["verified"] is True and model["sha256"] == "1a2b3c4d" * 8 and model["at"]
        assert session.status()["phase"] == "MarketOpen"             # nothing else of the status is touched

        await io.report_model(ModelStatus(uri=uri, state=ModelState.REFUSED, reason=Reason.MODEL_CORRUPT,
                                          message=f"{uri}/model.pt: sha256 3f2a… != 1a2b… in the manifest"))
        model = session.status()["model"]
        assert model["state"] == "Refused" and model["reason"] == "ModelCorrupt" and "version" not in model
        events = {(e.reason, e.type): e.message for e in session_events(session)}
        assert "version v20261201T150000Z-1a2b3c4d" in events[("ModelVerified", "Normal")]
        assert "refused, not served" in events[("ModelCorrupt", "Warning")]
    finally:
        await io.client.aclose()


def session_events(session: SessionHandle) -> list[Any]:
    from kubernetes import client

    core = client.CoreV1Api(session.custom.api_client)
    return [e for e in core.list_namespaced_event(session.namespace).items if e.involved_object.name == session.name]
