"""Moved to ``tests.fixtures.servers``; this alias stays only for test code written before the move."""

from tests.fixtures.servers import PostgresServer, RedisServer, ServerError, free_port, server_dir  # noqa: F401
