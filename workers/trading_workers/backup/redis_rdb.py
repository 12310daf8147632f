"""The redis target: an RDB snapshot of the instance, and the session's own keys.

Two artifacts, because they answer two different questions:

``redis/dump.rdb`` — the whole instance, point in time, in Redis's own RDB
format; what ``redis-cli --rdb`` produces. It is fetched the way
``redis-cli --rdb`` does it, over the network with the replication
handshake (``REPLCONF rdb-only 1`` + ``SYNC``): the server forks, writes a
consistent snapshot and streams it. This needs no access to the server's
disk (a backup pod has none) and no ``SAVE`` that would block the server.
Disaster recovery of a lost Redis uses this file (docs/backup.md: stop
Redis, put it in place as ``dump.rdb``, start Redis).

``redis/session.jsonl`` — only the session's keys (``tp:{ns/name}...``),
each as its ``DUMP`` payload (the RDB serialization of one value) with its
remaining TTL, all read in one ``MULTI``/``EXEC`` so they are consistent
with each other. ``trading-platform backup restore`` uses this one: one
Redis serves many sessions and only the halted session may be rewound, so
a restore deletes and ``RESTORE``s that session's keys and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import pathlib
import urllib.parse
from typing import Any

import redis.asyncio as aioredis

from trading_workers.errors import ConfigError, PermanentError

log = logging.getLogger("trading_workers.backup.redis")

RDB_NAME = "redis/dump.rdb"
KEYS_NAME = "redis/session.jsonl"
_GLOB_SPECIAL = "\\*?[]"
_BATCH = 500


class RedisBackupError(PermanentError):
    """The RDB transfer or a key restore failed."""


def glob_escape(prefix: str) -> str:
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in prefix)


def _cmd(*parts: str | bytes) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out += [f"${len(data)}\r\n".encode(), data, b"\r\n"]
    return b"".join(out)


async def _reply_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line:
        raise RedisBackupError("Redis closed the connection during the RDB transfer")
    return line.rstrip(b"\r\n")


async def snapshot_rdb(url: str, out: pathlib.Path, timeout: float = 600.0) -> dict[str, Any]:
    """Fetch an RDB snapshot over the replication protocol (``redis-cli --rdb``); returns size and sha256."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis":
        raise ConfigError(f"RDB snapshots need a redis:// URL (got {parts.scheme}://)")
    out.parent.mkdir(parents=True, exist_ok=True)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 6379, limit=1 << 20), timeout=10)
    digest = hashlib.sha256()
    size = 0
    try:
        if parts.password:
            auth = ([urllib.parse.unquote(parts.username)] if parts.username else []) + [
                urllib.parse.unquote(parts.password)]
            writer.write(_cmd("AUTH", *auth))
            if not (await _reply_line(reader)).startswith(b"+"):
                raise RedisBackupError("Redis refused AUTH")
        writer.write(_cmd("REPLCONF", "rdb-only", "1"))
        await _reply_line(reader)  # +OK, or -ERR on servers before 7.0 (then it is an ordinary SYNC)
        writer.write(_cmd("SYNC"))
        await writer.drain()

        async def receive() -> None:
            nonlocal size
            while True:
                line = await _reply_line(reader)
                if line == b"":
                    continue  # keep-alive newlines while the server forks and writes
                if line.startswith(b"-"):
                    raise RedisBackupError(f"Redis refused SYNC: {line[1:].decode(errors='replace')}")
                if line.startswith(b"$"):
                    break
                raise RedisBackupError(f"unexpected reply to SYNC: {line[:80]!r}")
            with open(out, "wb") as fh:
                if line.startswith(b"$EOF:"):
                    mark = line[5:]
                    tail = b""
                    while True:
                        chunk = await reader.read(1 << 20)
                        if not chunk:
                            raise RedisBackupError("Redis closed the connection during the RDB transfer")
                        tail += chunk
                        if tail.endswith(mark):
                            tail = tail[:-len(mark)]
                            fh.write(tail)
                            digest.update(tail)
                            size += len(tail)
                            return
                        keep = tail[-len(mark):]
                        body = tail[:-len(mark)]
                        fh.write(body)
                        digest.update(body)
                        size += len(body)
                        tail = keep
                remaining = int(line[1:])
                while remaining:
                    chunk = await reader.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise RedisBackupError("Redis closed the connection during the RDB transfer")
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    remaining -= len(chunk)

        await asyncio.wait_for(receive(), timeout=timeout)
    except (TimeoutError, OSError) as exc:
        raise RedisBackupError(f"RDB transfer failed: {exc.__class__.__name__}: {exc}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    with open(out, "rb") as fh:
        magic = fh.read(9)
    if not magic.startswith(b"REDIS"):
        raise RedisBackupError(f"the RDB transfer did not return an RDB file (starts with {magic!r})")
    log.info("redis RDB snapshot written", extra={"bytes": size, "rdb_version": magic[5:].decode(errors="replace")})
    return {"rdbBytes": size, "rdbVersion": magic[5:].decode(errors="replace")}


async def _session_keys(client: aioredis.Redis, prefix: str) -> list[bytes]:
    keys: list[bytes] = []
    async for key in client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
        keys.append(key)
    return sorted(keys)


async def dump_session_keys(url: str, prefix: str, out: pathlib.Path) -> dict[str, Any]:
    """Every key under ``prefix`` as (key, pttl, DUMP payload), read atomically; one JSON object per line."""
    out.parent.mkdir(parents=True, exist_ok=True)
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=60)
    try:
        keys = await _session_keys(client, prefix)
        pipe = client.pipeline(transaction=True)
        for key in keys:
            pipe.dump(key)
            pipe.pttl(key)
        results = await pipe.execute() if keys else []
    except aioredis.RedisError as exc:
        raise RedisBackupError(f"reading the session's keys failed: {exc}") from exc
    finally:
        await client.aclose()
    written = 0
    with open(out, "w") as fh:
        for i, key in enumerate(keys):
            payload, pttl = results[2 * i], results[2 * i + 1]
            if payload is None:  # deleted between SCAN and MULTI
                continue
            fh.write(json.dumps({"key": base64.b64encode(key).decode(), "pttl": int(pttl),
                                 "value": base64.b64encode(payload).decode()}) + "\n")
            written += 1
    log.info("redis session keys written", extra={"keys": written, "prefix": prefix})
    return {"keys": written, "prefix": prefix}


async def restore_session_keys(url: str, prefix: str, path: pathlib.Path) -> int:
    """Delete the session's keys, then RESTORE them from ``path``; returns the keys restored."""
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=60)
    try:
        for key in await _session_keys(client, prefix):
            await client.unlink(key)
        for start in range(0, len(entries), _BATCH):
            pipe = client.pipeline(transaction=True)
            for entry in entries[start:start + _BATCH]:
                key = base64.b64decode(entry["key"])
                if not key.decode(errors="replace").startswith(prefix):
                    raise RedisBackupError(f"key {key!r} in {path.name} is not the session's ({prefix})")
                pttl = int(entry["pttl"])
                pipe.restore(key, pttl if pttl > 0 else 0, base64.b64decode(entry["value"]), replace=True)
            await pipe.execute()
    except aioredis.RedisError as exc:
        raise RedisBackupError(f"restoring the session's keys failed: {exc}") from exc
    finally:
        await client.aclose()
    log.info("redis session keys restored", extra={"keys": len(entries), "prefix": prefix})
    return len(entries)
