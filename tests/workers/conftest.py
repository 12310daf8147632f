"""Fixtures for the worker tests: real Redis, real PostgreSQL, real API server, real worker processes.

Shared servers (one per test session) serve most tests; each test uses its
own session name, so keys, streams and journal rows never collide. Tests
that stop a server get their own (``own_redis``, ``own_postgres``).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.workers.servers import PostgresServer, RedisServer, server_dir
from trading_workers.journal import Journal


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    workdir = server_dir("redis")
    server = RedisServer(workdir).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    workdir = server_dir("pg")
    server = PostgresServer(workdir).init().start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    workdir = server_dir("redis-own")
    server = RedisServer(workdir).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    workdir = server_dir("pg-own")
    server = PostgresServer(workdir).init().start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def session_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def journal(postgres_server: PostgresServer, session_name: str) -> AsyncIterator[Journal]:
    j = await Journal.open(postgres_server.dsn, f"test/{session_name}")
    try:
        yield j
    finally:
        await j.close()
