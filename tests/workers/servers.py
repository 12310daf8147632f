"""The real Redis and PostgreSQL servers live in ``trading_dev.services`` (the demo starts them too)."""

from trading_dev.services import (  # noqa: F401 - re-exported for the tests
    PostgresServer,
    RedisServer,
    ServerError,
    free_port,
    server_dir,
)
