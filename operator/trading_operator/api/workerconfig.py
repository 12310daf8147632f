"""The resolved session config the operator hands to every worker.

The operator writes it as ``config.json`` in the session's ConfigMap; workers
read it at start (``TRADING_CONFIG`` points at the mounted file, or the
worker fetches the ConfigMap itself when no file is mounted). Its hash is
the Deployments' rollout annotation, so only changes that need a restart
(symbols, strategy, broker, calendar, clock) roll workers.

The model's ``uri``, ``rollout`` and ``retrain`` are in the config but not in its hash: a new
model is rolled out by the running inference worker (``status.modelRollout``).

What changes *without* a restart does not live here: halts, the trading
state and the RiskPolicy reach workers through their watch on the
TradingSession (``status.halt``, ``status.tradingState``,
``status.riskPolicy``), and the RiskPolicy itself is read by name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping

import pydantic

from trading_operator.api import session as session_api
from trading_operator.api.common import ApiModel

CONFIG_KEY = "config.json"
ENV_SESSION = "TRADING_SESSION"      # "namespace/name"
ENV_ROLE = "TRADING_ROLE"            # one of session.Role
ENV_CONFIG = "TRADING_CONFIG"        # path of the mounted config.json
ENV_REDIS_URL = "TRADING_REDIS_URL"
ENV_JOURNAL_DSN = "TRADING_JOURNAL_DSN"
ENV_HTTP_PORT = "TRADING_HTTP_PORT"  # /healthz, /readyz, /metrics
ENV_BROKER_KEY_ID = "APCA_API_KEY_ID"
ENV_BROKER_SECRET = "APCA_API_SECRET_KEY"
DEFAULT_HTTP_PORT = 8080
ENV_SECRET_VERSIONS = "TRADING_SECRET_VERSIONS"  # the pod's own names.ANNOTATION_SECRET_VERSIONS (Downward API)
NO_RESTART_MODEL_FIELDS = ("uri", "rollout", "retrain")
ENV_BIND_ADDRESS = "TRADING_BIND_ADDRESS"  # where health/metrics listen (operator and workers)


def bind_address(env: Mapping[str, str]) -> str:
    """``TRADING_BIND_ADDRESS`` if set; else every interface inside a cluster (the kubelet probes the pod's
    IP, Prometheus scrapes it) and loopback outside one (a laptop's endpoints are not the network's)."""
    return env.get(ENV_BIND_ADDRESS) or ("0.0.0.0" if env.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1")


class SessionIdentity(ApiModel):
    namespace: str = pydantic.Field(description="Session namespace.")
    name: str = pydantic.Field(description="Session name.")
    uid: str = pydantic.Field(default="", description="Session uid (journal key across re-creations).")


class WorkerConfig(ApiModel):
    """Everything a worker needs that is fixed for the life of its pod."""

    session: SessionIdentity
    symbols: list[str]
    broker: session_api.BrokerSpec
    strategy: session_api.StrategySpec
    calendar: session_api.CalendarSpec
    clock: session_api.ClockSpec
    on_halt: str
    risk_policy_name: str
    journal: session_api.JournalSpec = pydantic.Field(default_factory=session_api.JournalSpec,
                                                      description="Journal retention.")
    clock_anchor: dt.datetime = pydantic.Field(
        description="Wall time at which the simulated clock reads clock.start (see api.clock.session_now).")

    @classmethod
    def from_session(cls, ts: session_api.TradingSession) -> WorkerConfig:
        spec = ts.spec
        return cls(
            session=SessionIdentity(namespace=ts.metadata.namespace, name=ts.metadata.name, uid=ts.metadata.uid),
            symbols=list(spec.symbols), broker=spec.broker, strategy=spec.strategy, calendar=spec.calendar,
            clock=spec.clock, journal=spec.journal, on_halt=spec.on_halt, risk_policy_name=spec.risk_policy_ref.name,
            # The API server always sets creationTimestamp; the epoch keeps the hash deterministic without it.
            clock_anchor=ts.metadata.creation_timestamp or dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        )

    def to_json(self) -> str:
        return json.dumps(self.wire(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """The rollout annotation: the config minus what reaches running workers without a restart.

        ``strategy.model``'s ``uri``, ``rollout`` and ``retrain`` are left out: a new model URI is a
        candidate the running inference worker loads beside the stable one (``status.modelRollout``), so
        changing it restarts nothing.
        """
        wire = self.wire()
        model = (wire.get("strategy") or {}).get("model")
        if isinstance(model, dict):
            for key in NO_RESTART_MODEL_FIELDS:
                model.pop(key, None)
        return hashlib.sha256(json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def format_versions(versions: dict[str, str]) -> str:
    """The pod-template annotation trading.dev/secret-versions (a pod reads it as ``ENV_SECRET_VERSIONS``):
    ``name=version`` pairs, sorted, comma-separated."""
    return ",".join(f"{name}={versions[name]}" for name in sorted(versions))


def parse_versions(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        name, sep, version = item.partition("=")
        if sep and name:
            out[name] = version
    return out
