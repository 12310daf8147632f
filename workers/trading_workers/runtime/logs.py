"""Logs: one JSON object per line, with the session, the role and any ``log_context`` fields.

Known secret values (the broker keys from the environment) and URL passwords are masked before a
line is written, so a credential never reaches a log collector.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from trading_operator.api import workerconfig as wc

_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("trading_log_context", default={})  # noqa: B039
_RESERVED = set(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {"message", "asctime", "taskName"}
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s/]+@")


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (e.g. ``client_order_id``) to every log line written inside the block."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _secret_values() -> list[str]:
    names = (wc.ENV_BROKER_KEY_ID, wc.ENV_BROKER_SECRET)
    return [v for v in (os.environ.get(n, "") for n in names) if len(v) >= 4]


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Mask credentials: known secret values and passwords in URLs."""
    for secret in secrets if secrets is not None else _secret_values():
        text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\1***@", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, static fields, context fields, extras."""

    def __init__(self, static: dict[str, str]) -> None:
        super().__init__()
        self.static = static
        self.secrets = _secret_values()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(), **self.static,
            **_CONTEXT.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str), self.secrets)


def setup_logging(static: dict[str, str], level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("TRADING_LOG_LEVEL", "INFO"))
    for noisy in ("kubernetes", "urllib3", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
