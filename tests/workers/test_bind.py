"""Workers' health servers listen on loopback outside a cluster, on every interface inside one (issue 20, defect 7)."""

from __future__ import annotations

import pytest

from tests.bind import listen_addresses
from tests.fixtures.servers import free_port
from trading_workers.runtime import Health, Settings

pytestmark = pytest.mark.services


def test_bind_address_follows_the_environment() -> None:
    base = {"TRADING_SESSION": "ns/s"}
    assert Settings.from_env("executor", env=base).bind_address == "127.0.0.1"
    assert Settings.from_env("executor", env={**base, "KUBERNETES_SERVICE_HOST": "10.0.0.1"}).bind_address == "0.0.0.0"
    assert Settings.from_env("executor", env={**base, "KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                              "TRADING_BIND_ADDRESS": "10.1.2.3"}).bind_address == "10.1.2.3"


async def test_a_worker_health_server_off_cluster_listens_on_loopback_only() -> None:
    settings = Settings.from_env("executor", env={"TRADING_SESSION": "ns/s", "TRADING_HTTP_PORT": str(free_port())})
    health = Health()
    await health.start(settings.http_port, settings.bind_address)
    try:
        assert listen_addresses(settings.http_port) == {"127.0.0.1"}
    finally:
        await health.stop()
