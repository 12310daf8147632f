"""Process settings (command line and environment) and the worker config they lead to.

Env names come from ``trading_operator.api.workerconfig`` (the contract between the operator, which
writes them into the Deployments, and the workers, which read them). The config is the resolved
``WorkerConfig`` from the file ``TRADING_CONFIG`` points at (the mounted ConfigMap), else read from
the ConfigMap ``<session>-config`` through the API server.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

from trading_operator.api import workerconfig as wc
from trading_workers.errors import ConfigError
from trading_workers.runtime.kube import Kube
from trading_workers.runtime.retry import with_retries


@dataclass(frozen=True)
class Settings:
    """Process settings from the command line and the environment (names from the contract)."""

    namespace: str
    name: str
    role: str
    redis_url: str
    journal_dsn: str
    http_port: int
    config_path: str | None
    bind_address: str = "127.0.0.1"

    @property
    def session_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_env(cls, role: str, session: str | None = None, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        session = session or env.get(wc.ENV_SESSION, "")
        if session.count("/") != 1 or not all(session.split("/")):
            raise ConfigError(f"session must be NAMESPACE/NAME, got {session!r}")
        namespace, name = session.split("/")
        try:
            port = int(env.get(wc.ENV_HTTP_PORT, wc.DEFAULT_HTTP_PORT))
        except ValueError as exc:
            raise ConfigError(f"{wc.ENV_HTTP_PORT} must be a port number") from exc
        return cls(namespace=namespace, name=name, role=role,
                   redis_url=env.get(wc.ENV_REDIS_URL, "redis://127.0.0.1:6379/0"),
                   journal_dsn=env.get(wc.ENV_JOURNAL_DSN, ""), http_port=port,
                   config_path=env.get(wc.ENV_CONFIG) or None, bind_address=wc.bind_address(env))


async def load_config(settings: Settings, kube: Kube | None) -> wc.WorkerConfig:
    """The worker config from ``TRADING_CONFIG``, else from the session's ConfigMap."""
    if settings.config_path:
        try:
            text = pathlib.Path(settings.config_path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {wc.ENV_CONFIG}={settings.config_path}: {exc}") from exc
    else:
        if kube is None:
            raise ConfigError(f"no {wc.ENV_CONFIG} file and no Kubernetes access to read the ConfigMap")
        cm_name = f"{settings.name}-config"
        data = await with_retries(lambda: kube.read_configmap(settings.namespace, cm_name), max_delay=60)
        if wc.CONFIG_KEY not in data:
            raise ConfigError(f"ConfigMap {cm_name} has no {wc.CONFIG_KEY}")
        text = data[wc.CONFIG_KEY]
    try:
        return wc.WorkerConfig.model_validate_json(text)
    except ValueError as exc:
        raise ConfigError(f"invalid worker config: {exc}") from exc
