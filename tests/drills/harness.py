"""The drill harness: one TradingSession on the whole local platform, and what its executor did.

A ``Drill`` is one RiskPolicy and one TradingSession in a namespace of its own, on a running
``LocalPlatform`` (real kube-apiserver + etcd, Redis, PostgreSQL, the operator as a subprocess,
the workers as processes of the local runtime). The drill alone sends order intents: the
session's strategy (and inference) workers run at zero replicas, so every order the executor
handles came from ``send_intent``.

What the executor did is read from the records it writes, never from its own claims:

* the trade journal (PostgreSQL): ``orders`` (journaled before sending; status afterwards) and
  ``rejections`` (refused by a pre-trade check, never sent);
* the simulated exchange's persisted world (Redis, ``brokers.simulated.read_record``): every
  submit it received, its orders, fills and account.

Helpers are synchronous: drills are plain ``def test_...`` functions. A drill module marks itself
``pytestmark = [pytest.mark.drill, pytest.mark.e2e]`` (``e2e`` keeps it out of ``make test-unit``)::

    def test_restricted_symbol(make_drill):
        d = make_drill(policy={"orderControls": {"restrictedSymbols": ["NVDA"]}}, symbols=["AAPL", "NVDA"])
        out = d.order_outcome(d.send_intent("NVDA", "buy", 10))
        assert out.refused and out.reason == "RestrictedSymbol" and not out.reached_exchange
        assert d.order_outcome(d.send_intent("AAPL", "buy", 10)).sent
        d.patch_spec({"halted": True, "haltReason": "drill"})
        d.wait_condition("Halted", "True", reason="HaltedByUser")
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import re
import time
import urllib.request
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import psycopg
import redis
import redis.asyncio as aioredis
from kubernetes import client
from kubernetes import config as kconfig
from kubernetes.client.rest import ApiException

from tests.fixtures.api import G, V
from tests.fixtures.builders import DEFAULT_POLICY
from tests.fixtures.waiting import eventually_sync
from trading_dev.platform import LocalPlatform
from trading_dev.runtime import Replica
from trading_operator import names
from trading_operator.api.session import Role
from trading_workers import bus as bus_mod
from trading_workers.brokers.simulated import BrokerRecord, read_record
from trading_workers.domain import OrderIntent, OrderType, Side, client_order_id

SESSIONS, POLICIES = "tradingsessions", "riskpolicies"
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")

# A Tuesday at 10:00 in New York: the XNYS calendar says MarketOpen (close at 16:00, six session hours away).
DEFAULT_SESSION_TIME = dt.datetime(2026, 11, 24, 10, 0, tzinfo=NEW_YORK)
DEFAULT_SYMBOLS = ("AAPL", "MSFT")

T = TypeVar("T")

# Every drill namespace holds the journal DSN (with a password: PostgreSQL's trust auth ignores it) and
# broker keys as Secrets; the drill platform's operator names the journal Secret, so every drill runs
# with credentials by reference, and test_secrets.py scans the whole run for these values.
JOURNAL_SECRET, BROKER_SECRET = "drill-journal", "drill-broker"
JOURNAL_PASSWORD = "drill-journal-pw-5f1e9c"
BROKER_KEY_ID, BROKER_SECRET_KEY = "DRILLKEYID7Q2", "drill-broker-secret-8d3a41"
ROTATED_KEY_ID, ROTATED_SECRET_KEY = "DRILLKEYID8R3", "drill-broker-rotated-2c77e0"  # test_rotation.py
SECRET_VALUES = (JOURNAL_PASSWORD, BROKER_KEY_ID, BROKER_SECRET_KEY, ROTATED_KEY_ID, ROTATED_SECRET_KEY)
OPERATOR_ENV = {"TRADING_JOURNAL_DSN_SECRET_NAME": JOURNAL_SECRET}


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``overrides`` merged over ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


wait_until = eventually_sync  # the old name, for drills written before tests/fixtures


def _run(coro: Any) -> Any:
    """Run one coroutine to completion (helpers are synchronous; drills are plain test functions)."""
    return asyncio.run(coro)


@dataclass(frozen=True)
class Outcome:
    """What became of one intent, from the journal and the exchange's own record.

    ``status`` is the journal's order status (new, accepted, partially_filled, filled, canceled,
    rejected) or ``"refused"`` for a pre-trade rejection (then ``reason`` is the check's code,
    e.g. ``TradingHalted``, ``ReduceOnly``, ``MaxOrderNotional``). ``reached_exchange`` says whether
    the simulated exchange recorded a submit with this client_order_id.
    """

    client_order_id: str
    status: str
    reason: str | None
    reached_exchange: bool
    exchange_status: str | None
    filled_qty: float

    @property
    def refused(self) -> bool:
        """Refused by a pre-trade check (journaled in ``rejections``, never sent)."""
        return self.status == "refused"

    @property
    def sent(self) -> bool:
        """The exchange received it."""
        return self.reached_exchange

    @property
    def not_sent(self) -> bool:
        """Journaled as an order, then cancelled before sending (a halt seen between journal and send)."""
        return self.status == "canceled" and not self.reached_exchange


class Drill:
    """One RiskPolicy + TradingSession on the platform, and helpers to drive and observe it."""

    def __init__(self, platform: LocalPlatform, namespace: str, name: str, policy_name: str,
                 symbols: list[str]) -> None:
        self.platform = platform
        self.namespace = namespace
        self.name = name
        self.policy_name = policy_name
        self.symbols = symbols
        api_client = kconfig.new_client_from_config(str(platform.kubeconfig))
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        assert platform.redis is not None and platform.postgres is not None
        self.redis_url = platform.redis.url
        self.dsn = platform.postgres.dsn
        self.redis = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.uid = ""

    # ------------------------------------------------------------ identity

    @property
    def key(self) -> str:
        """The journal's session key (the workers' ``Settings.session_key``)."""
        return f"{self.namespace}/{self.name}"

    @property
    def prefix(self) -> str:
        """The session's Redis key prefix (bus streams, simulated exchange)."""
        return bus_mod.session_prefix(self.namespace, self.name)

    def log_path(self, role: Role | str, replica: int = 0) -> str:
        """The local runtime's log file of one worker process."""
        return str(self.platform.workdir / "runtime" / "logs"
                   / f"{self.namespace}.{names.deployment(self.name, role)}-{replica}.log")

    def replicas(self, role: Role | str) -> list[Replica]:
        """The local runtime's processes for one worker role (pid in ``.proc``, HTTP port in ``.port``)."""
        runtime = self.platform.runtime
        pods = runtime.pods.get((self.namespace, names.deployment(self.name, role))) if runtime else None
        return list(pods.replicas) if pods else []

    def metric(self, role: Role | str, name: str, replica: int = 0, **labels: str) -> float | None:
        """One sample of a worker's ``/metrics`` (None if the sample is absent)."""
        port = self.replicas(role)[replica].port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(want + " ")), None)

    def hint(self) -> str:
        return (f"operator log: {self.platform.logs / 'operator.log'}; executor log: {self.log_path(Role.EXECUTOR)}; "
                f"status: {json.dumps(self._status_or_error(), default=str)[:3000]}")

    def _status_or_error(self) -> Any:
        try:
            return self.status()
        except Exception as exc:
            return repr(exc)

    # ------------------------------------------------------------ Kubernetes

    def get(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.get_namespaced_custom_object(
            G, V, self.namespace, SESSIONS, self.name))

    def status(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.get().get("status") or {})

    def policy(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.get_namespaced_custom_object(
            G, V, self.namespace, POLICIES, self.policy_name))

    def condition(self, type_: str, status: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        st = self.status() if status is None else status
        return next((dict(c) for c in st.get("conditions") or [] if c.get("type") == type_), None)

    def patch_spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the session's spec (``None`` values remove a field)."""
        return cast(dict[str, Any], self.custom.patch_namespaced_custom_object(
            G, V, self.namespace, SESSIONS, self.name, {"spec": dict(spec)}))

    def patch_policy(self, spec: Mapping[str, Any]) -> int:
        """JSON merge patch of the RiskPolicy's spec; returns the policy's new generation."""
        obj = cast(dict[str, Any], self.custom.patch_namespaced_custom_object(
            G, V, self.namespace, POLICIES, self.policy_name, {"spec": dict(spec)}))
        return int(obj["metadata"]["generation"])

    def events(self, name: str | None = None, kind: str | None = "TradingSession") -> list[dict[str, Any]]:
        """Kubernetes Events about ``name`` (default: the session) in the drill's namespace, oldest first."""
        return list_events(self.core, self.namespace, name or self.name, kind)

    def event_reasons(self, name: str | None = None, kind: str | None = "TradingSession") -> list[str]:
        return [e["reason"] for e in self.events(name, kind)]

    # ------------------------------------------------------------ waiting on status

    def wait_status(self, predicate: Callable[[dict[str, Any]], Any], what: str,
                    timeout: float = 30.0) -> dict[str, Any]:
        """Poll the session's status until ``predicate(status)`` is truthy; returns that status."""
        def probe() -> dict[str, Any] | None:
            st = self.status()
            return st if predicate(st) else None
        return eventually_sync(probe, timeout=timeout, what=f"{self.key}: {what}", hint=self.hint())

    def wait_phase(self, phase: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_status(lambda st: st.get("phase") == phase, f"phase {phase}", timeout)

    def wait_condition(self, type_: str, status: str = "True", reason: str | None = None,
                       timeout: float = 30.0) -> dict[str, Any]:
        """Wait until condition ``type_`` has ``status`` (and ``reason``, if given); returns the condition."""
        def match(st: dict[str, Any]) -> bool:
            cond = self.condition(type_, st)
            return cond is not None and cond.get("status") == status and (reason is None or cond.get("reason") == reason)
        st = self.wait_status(match, f"condition {type_}={status}" + (f" reason {reason}" if reason else ""), timeout)
        cond = self.condition(type_, st)
        assert cond is not None
        return cond

    def wait_event(self, reason: str, timeout: float = 30.0, name: str | None = None,
                   kind: str | None = "TradingSession") -> dict[str, Any]:
        return eventually_sync(lambda: next((e for e in self.events(name, kind) if e["reason"] == reason), None),
                               timeout=timeout, what=f"Event {reason} on {name or self.name}", hint=self.hint())

    def wait_trading(self, timeout: float = 60.0) -> dict[str, Any]:
        """MarketOpen, the executor ready and reporting Active, and quotes on the bus for every symbol.

        After this an intent is handled at once (a market order has its reference price).
        """
        self.wait_phase("MarketOpen", timeout)
        st = self.wait_status(lambda st: (st.get("executor") or {}).get("tradingState") == "Active"
                              and ((st.get("workers") or {}).get("executor") or {}).get("ready") == 1,
                              "the executor ready and Active", timeout)
        eventually_sync(lambda: self.redis.xlen(f"{self.prefix}:stream:{bus_mod.MARKET_DATA}") >= 2 * len(self.symbols),
                        timeout=timeout, what="quotes on the bus", hint=self.hint())
        return st

    # ------------------------------------------------------------ orders

    def send_intent(self, symbol: str, side: str | Side, qty: float, order_type: str | OrderType = "market",
                    limit_price: float | None = None, signal_id: str | None = None) -> str:
        """Publish a well-formed order intent on the session's intents stream; returns its client_order_id.

        The id is the one the executor derives (``domain.client_order_id(session uid, signal id)``);
        each call uses a fresh signal id unless ``signal_id`` is given (a redelivery).
        """
        signal_id = signal_id or f"drill-{uuid.uuid4().hex[:16]}"
        intent = OrderIntent(symbol=symbol, side=Side(side), qty=float(qty), order_type=OrderType(order_type),
                             limit_price=limit_price, signal_id=signal_id)
        self.redis.xadd(f"{self.prefix}:stream:{bus_mod.INTENTS}", bus_mod.encode_intent(intent))  # type: ignore[arg-type]
        return client_order_id(self.uid, signal_id)

    def outcome_now(self, coid: str) -> Outcome | None:
        """What became of the intent so far: None while it is unhandled (not journaled, or journaled ``new``)."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            if not _tables_exist(conn):
                return None  # the executor has not migrated the journal yet
            rejected = conn.execute("SELECT reason FROM rejections WHERE session = %s AND client_order_id = %s",
                                    (self.key, coid)).fetchone()
            order = conn.execute("SELECT status, reject_reason, filled_qty FROM orders "
                                 "WHERE session = %s AND client_order_id = %s", (self.key, coid)).fetchone()
        if rejected is None and (order is None or order[0] == "new"):
            return None
        record = self.exchange()
        at_exchange = record.orders.get(coid)
        reached = any(s.client_order_id == coid for s in record.submits)
        if rejected is not None:
            return Outcome(coid, "refused", rejected[0], reached, at_exchange.status.value if at_exchange else None, 0.0)
        assert order is not None
        return Outcome(coid, order[0], order[1], reached, at_exchange.status.value if at_exchange else None,
                       float(order[2]))

    def order_outcome(self, coid: str, timeout: float = 20.0) -> Outcome:
        """Wait until the executor has handled the intent (sent, refused or cancelled unsent); return what it did."""
        return eventually_sync(lambda: self.outcome_now(coid), timeout=timeout,
                               what=f"the executor to handle intent {coid}", hint=self.hint())

    def wait_order_status(self, coid: str, *statuses: str, timeout: float = 20.0) -> Outcome:
        """Wait until the journal shows the order in one of ``statuses`` (e.g. filled after a partial fill)."""
        def probe() -> Outcome | None:
            out = self.outcome_now(coid)
            return out if out is not None and out.status in statuses else None
        return eventually_sync(probe, timeout=timeout, what=f"order {coid} to be {'/'.join(statuses)}", hint=self.hint())

    def exchange(self) -> BrokerRecord:
        """The simulated exchange's own record for this session: submits received, orders, fills, account."""
        async def read() -> BrokerRecord:
            conn = aioredis.Redis.from_url(self.redis_url)
            try:
                return await read_record(conn, self.prefix)
            finally:
                await conn.aclose()
        return cast(BrokerRecord, _run(read()))

    def journal_orders(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM orders WHERE session = %s ORDER BY created_at")

    def journal_rejections(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM rejections WHERE session = %s ORDER BY id")

    def risk_events(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM risk_events WHERE session = %s ORDER BY id")

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            if not _tables_exist(conn):
                return []
            cur = conn.execute(sql, (self.key,))
            cols = [d.name for d in cur.description or []]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # ------------------------------------------------------------ teardown

    def delete(self, timeout: float = 30.0) -> None:
        """Delete the session (the operator halts it, lets the executor handle open orders, deletes the
        workers) and wait for it to go; if the finalizer does not finish in time, remove the workers
        and the finalizer here so the next drill does not share the machine with this one's processes."""
        try:
            self._delete(timeout)
        finally:
            self.redis.close()

    def _delete(self, timeout: float) -> None:
        try:
            self.custom.delete_namespaced_custom_object(G, V, self.namespace, SESSIONS, self.name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get()
            except ApiException as exc:
                if exc.status == 404:
                    break
                raise
            time.sleep(0.3)
        else:
            for role in Role:
                try:
                    self.apps.delete_namespaced_deployment(names.deployment(self.name, role), self.namespace)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
            try:
                self.custom.patch_namespaced_custom_object(G, V, self.namespace, SESSIONS, self.name,
                                                           {"metadata": {"finalizers": None}})
            except ApiException as exc:
                if exc.status != 404:
                    raise
            raise AssertionError(f"{self.key} was not deleted within {timeout:g}s; removed its workers by hand. "
                                 + self.hint())


def _tables_exist(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('public.orders') IS NOT NULL AND to_regclass('public.rejections') IS NOT NULL"
                       ).fetchone()
    return bool(row and row[0])


def list_events(core: client.CoreV1Api, namespace: str, name: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Events about one object (core/v1, which also serves events.k8s.io/v1 Events), oldest first."""
    selector = f"involvedObject.name={name}" + (f",involvedObject.kind={kind}" if kind else "")
    items = core.list_namespaced_event(namespace, field_selector=selector).items
    out = [{"type": e.type, "reason": e.reason, "message": e.message, "count": e.count or 1,
            "at": e.last_timestamp or e.event_time or e.first_timestamp or e.metadata.creation_timestamp}
           for e in items]
    return sorted(out, key=lambda e: (e["at"] is None, e["at"] or dt.datetime.min.replace(tzinfo=dt.UTC)))


def namespace_for(test_name: str) -> str:
    """A fresh, valid namespace name for one drill."""
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"drill-{slug}-{uuid.uuid4().hex[:5]}"


def session_time(at: dt.datetime | str) -> dt.datetime:
    """A session clock time; a naive value (or ISO string without offset) is New York local time."""
    value = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    if value.tzinfo is None:
        value = value.replace(tzinfo=NEW_YORK)
    return value.astimezone(dt.UTC)


def create_drill(platform: LocalPlatform, namespace: str, *, policy: Mapping[str, Any] | None = None,
                 spec: Mapping[str, Any] | None = None, symbols: list[str] | None = None,
                 at: dt.datetime | str = DEFAULT_SESSION_TIME, speed: float = 10.0, risk: bool = True,
                 name: str = "drill", policy_name: str = "drill-limits") -> Drill:
    """Create the namespace, a RiskPolicy (``policy`` merged over ``DEFAULT_POLICY``) and a TradingSession.

    The session runs on the simulated exchange with a simulated clock reading ``at`` when it is
    created, ``speed`` times faster than wall time; strategy and inference at zero replicas (the
    drill sends the intents), market data, executor and (unless ``risk=False``) the risk worker at
    one. ``spec`` is merged over that last. Without the risk worker nobody reports quote ages, so
    the pre-market checklist fails (market data fresh) and the session stays in PreMarket: use
    ``risk=False`` with ``make_drill(wait="PreMarket")`` for checklist drills only.
    """
    symbols = list(symbols or DEFAULT_SYMBOLS)
    drill = Drill(platform, namespace, name, policy_name, symbols)
    drill.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=namespace, labels={"trading.dev/drill": "true"})))
    assert platform.postgres is not None
    dsn = platform.postgres.dsn.replace("postgres@", f"postgres:{JOURNAL_PASSWORD}@", 1)
    for secret, data in ((JOURNAL_SECRET, {"dsn": dsn}),
                         (BROKER_SECRET, {"APCA_API_KEY_ID": BROKER_KEY_ID, "APCA_API_SECRET_KEY": BROKER_SECRET_KEY})):
        drill.core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=secret),
                                                                       string_data=data))
    drill.custom.create_namespaced_custom_object(G, V, namespace, POLICIES, {
        "apiVersion": f"{G}/{V}", "kind": "RiskPolicy", "metadata": {"name": policy_name},
        "spec": deep_merge(DEFAULT_POLICY, policy)})
    start = session_time(at).isoformat().replace("+00:00", "Z")
    base_spec: dict[str, Any] = {
        "broker": {"kind": "simulated", "simulated": {"seed": 7}, "credentialsSecretRef": {"name": BROKER_SECRET}},
        "symbols": symbols,
        "strategy": {"name": "momentum"},
        "riskPolicyRef": {"name": policy_name},
        "clock": {"mode": "simulated", "speed": speed, "start": start},
        "workers": {"strategy": {"replicas": 0}, "inference": {"replicas": 0},
                    "risk": {"replicas": 1 if risk else 0}},
        "onHalt": "CancelOpenOrders",
    }
    body = {"apiVersion": f"{G}/{V}", "kind": "TradingSession", "metadata": {"name": name},
            "spec": deep_merge(base_spec, spec)}
    obj = cast(dict[str, Any], drill.custom.create_namespaced_custom_object(G, V, namespace, SESSIONS, body))
    drill.uid = obj["metadata"]["uid"]
    return drill
