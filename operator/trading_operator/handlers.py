# mypy: disable-error-code="arg-type"
# (kopf's handler protocols type `namespace` as `str | None` and list every kwarg; handlers here
#  name only what they use, which is kopf's documented style.)
"""Every kopf handler of the operator, in one place, each thin: it reads what kopf hands it and delegates.

Sessions are reconciled by ``trading_operator.loop``'s one dispatcher (no kopf daemon per session):
a session is reconciled when an event wakes it (its own session, its Deployments, its RiskPolicy,
its Secrets) or when its next calendar boundary or deadline is due. Watch events only wake, so a
burst of events costs one reconcile, and the halt path is: watch event -> wake -> reconcile ->
status write.

kopf's diff-base (the ``last-handled-configuration`` annotation) is not kept: no handler here reads
``old``/``new``/``diff`` (there are no on.create/on.update/on.field handlers), and keeping it cost
one more PATCH of every new object and a deep copy of every body on every event (``NoDiffBase``).

Live state comes from kopf's in-memory indexes (policies, worker Deployments, session ConfigMaps), so a reconcile reads
nothing from the API server. Backups and RiskPolicies are reconciled directly by their handlers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import prometheus_client

from trading_operator import calendar, errors, leader, liveness, metrics, names, secretwatch
from trading_operator.api import common
from trading_operator.api.session import CalendarSpec, Role
from trading_operator.api.status import Reason
from trading_operator.loop import Inputs, PostEvent, SessionLoop, essence
from trading_operator.reconcile import backup as backup_reconcile
from trading_operator.reconcile import policy as policy_reconcile
from trading_operator.reconcile import session as session_reconcile
from trading_operator.settings import Settings

G, V = common.GROUP, common.VERSION
LOG = logging.getLogger(__name__)
CANARY_MAX_AGE = 60.0
BACKUP_INTERVAL = 15.0
# The namespaces the operator serves (``--namespace``; empty: cluster-wide), set by ``__main__``.
NAMESPACES: list[str] = []


@dataclass
class Context:
    settings: Settings
    sessions: SessionLoop
    policies_seen: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)  # loop.essence per policy


def ctx(memo: kopf.Memo) -> Context:
    return memo["ctx"]  # type: ignore[no-any-return]


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing: every object looks new to kopf's change detection, which
    matters to no handler here (see the module docstring), and nothing is ever written for it."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> None:  # type: ignore[override]
        return None

    def fetch(self, *, body: kopf.Body) -> None:  # type: ignore[override]
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:  # type: ignore[override]
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    op = Settings()
    memo["ctx"] = Context(settings=op, sessions=SessionLoop(op, log=LOG))
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="trading.dev")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING  # our own Events are posted explicitly
    settings.posting.reporting_component = names.MANAGED_BY  # Events say "From: trading-operator", not kopf
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.batching.batch_window = 0.01
    settings.execution.max_workers = 32
    prometheus_client.start_http_server(op.metrics_port, addr=op.bind_address)


@kopf.on.startup()
async def secret_versions(memo: kopf.Memo, **_: Any) -> None:
    """The metadata-only Secret watch (secretwatch): listed once before any session is reconciled, so a
    reconcile never mistakes an empty cache for rotated Secrets; a change wakes the sessions that use it."""
    if "ctx" not in memo:
        raise kopf.TemporaryError("waiting for configure", delay=0.1)
    c = ctx(memo)
    if not c.settings.rotation_enabled:
        secretwatch.VERSIONS.disabled = "Secret versions are not tracked (rotation disabled: TRADING_ROTATION_ENABLED)"
        return
    await secretwatch.VERSIONS.start(NAMESPACES, on_change=c.sessions.wake)


@kopf.on.startup()
async def calendar_table(memo: kopf.Memo, **_: Any) -> None:
    """Start computing the default exchange's calendar table now, beside kopf's first listings, so that the
    first session reconciled (after a start or a failover) does not wait for the child process alone."""
    memo["calendar_preload"] = asyncio.create_task(_preload_calendar(CalendarSpec().exchange))


async def _preload_calendar(exchange: str) -> None:
    try:
        await calendar.prepare(exchange)
    except errors.OperatorError as exc:  # the first reconcile asks again and reports it
        LOG.warning("calendar table for %s not computed at start: %s", exchange, exc)


# ------------------------------------------------------------------ indexes
# Index and event handlers are async: kopf runs sync handlers in a thread pool, which cost a thread
# hop per watch event and set the daemons' asyncio.Event from a foreign thread (not thread-safe: the
# loop is not woken, so a wake-up could wait for the next unrelated loop iteration).

@kopf.index(G, V, "riskpolicies")
async def policies(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.index("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
async def workers(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, labels.get(names.LABEL_SESSION, "")): session_reconcile.trim_deployment(body)}


@kopf.index("", "v1", "configmaps", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
async def config_maps(namespace: str, labels: kopf.Labels, body: kopf.Body,
                      **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, labels.get(names.LABEL_SESSION, "")): session_reconcile.trim_config_map(body)}


@kopf.index(G, V, "tradingsessions")
async def sessions_by_policy(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    return {(namespace, str(spec.get("riskPolicyRef", {}).get("name", ""))): name}


# ------------------------------------------------------------------ sessions

@kopf.on.event(G, V, "tradingsessions")
async def session_event(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, type: str | None,
                        policies: kopf.Index[tuple[str, str], dict[str, Any]],
                        workers: kopf.Index[tuple[str, str], dict[str, Any]],
                        config_maps: kopf.Index[tuple[str, str], dict[str, Any]], **_: Any) -> None:
    loop = ctx(memo).sessions
    if loop.lookup is None:  # kopf's indexes are live views: one lookup serves every reconcile
        loop.lookup = _lookup(policies, workers, config_maps)
    # A heartbeat alone wakes no reconcile (loop.essence): its arrival is recorded here, so the executor's
    # silence is counted from when the heartbeat came, not from the next reconcile.
    if type == "DELETED":
        liveness.WATCH.forget(f"{namespace}/{name}")
    else:
        liveness.WATCH.saw(f"{namespace}/{name}", session_reconcile.heartbeat(body))
    loop.session_event(namespace, name, body, _poster(body), gone=type == "DELETED")


def _lookup(policies: kopf.Index[tuple[str, str], dict[str, Any]],
            workers: kopf.Index[tuple[str, str], dict[str, Any]],
            config_maps: kopf.Index[tuple[str, str], dict[str, Any]]) -> Callable[[Mapping[str, Any]], Inputs]:
    def lookup(snapshot: Mapping[str, Any]) -> Inputs:
        namespace, name = snapshot["metadata"]["namespace"], snapshot["metadata"]["name"]
        policy_name = str(snapshot.get("spec", {}).get("riskPolicyRef", {}).get("name", ""))
        live = {d["metadata"]["name"]: d for d in workers.get((namespace, name), [])}
        return Inputs(policy=next(iter(policies.get((namespace, policy_name), [])), None),
                      deployments={role: live.get(names.deployment(name, role)) for role in Role},
                      config_map=next((m for m in config_maps.get((namespace, name), [])
                                       if m["metadata"]["name"] == names.configmap(name)), None))
    return lookup


@kopf.on.cleanup()
async def stop_sessions(memo: kopf.Memo, **_: Any) -> None:
    if "ctx" in memo:
        await ctx(memo).sessions.close()


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
async def worker_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    # ADDED (or listed) Deployments are the operator's own creations: the index has them, and the session
    # reconcile that created them needs nothing more. Changes (ready replicas, hand edits) and deletions wake.
    if type in ("MODIFIED", "DELETED"):
        ctx(memo).sessions.wake(namespace, labels.get(names.LABEL_SESSION, ""))


@kopf.on.event("", "v1", "configmaps", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
async def config_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    # A hand edit, a deletion or a deposed leader's late write of a session's ConfigMap wakes its session.
    if type in ("MODIFIED", "DELETED"):
        ctx(memo).sessions.wake(namespace, labels.get(names.LABEL_SESSION, ""))


def _poster(body: kopf.Body) -> PostEvent:
    ref = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": {
        k: body.get("metadata", {}).get(k) for k in ("namespace", "name", "uid")}}
    return lambda e: kopf.event(ref, type=e.type, reason=e.reason, message=e.message)


@kopf.on.delete(G, V, "tradingsessions")
async def session_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    c = ctx(memo)
    done = await session_reconcile.finalize(dict(body), c.settings, _poster(body))
    if not done:
        raise kopf.TemporaryError("waiting for the executor to handle open orders", delay=1)


# ------------------------------------------------------------------ policies

@kopf.on.event(G, V, "riskpolicies")
async def policy_event(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, type: str | None,
                       sessions_by_policy: kopf.Index[tuple[str, str], str], **_: Any) -> None:
    users = list(sessions_by_policy.get((namespace, name), []))
    # Sessions read a policy's spec, labels and annotations, never its status (which the operator writes
    # below): a status change wakes nobody (it woke all of a policy's sessions at every count update).
    seen, key = ctx(memo).policies_seen, (namespace, name)
    changed = type == "DELETED" or seen.get(key) != essence(body, status=False)
    seen[key] = essence(body, status=False)
    if changed:
        for session in users:
            ctx(memo).sessions.wake(namespace, session)
    if type == "DELETED":
        seen.pop(key, None)
        return
    try:
        await policy_reconcile.reconcile(dict(body), users)
    except errors.OperatorError as exc:
        metrics.RECONCILE_FAILURES.labels("RiskPolicy", exc.reason).inc()


@kopf.on.delete(G, V, "riskpolicies")
async def policy_deleted(namespace: str, name: str, body: kopf.Body,
                         sessions_by_policy: kopf.Index[tuple[str, str], str], **_: Any) -> None:
    """In-use protection: the finalizer holds a RiskPolicy while sessions still reference it."""
    users = sorted(sessions_by_policy.get((namespace, name), []))
    if users:
        message = (f"deletion waits: TradingSessions still use this RiskPolicy: {', '.join(users[:20])}"
                   f"{' …' if len(users) > 20 else ''}; they do not trade until it is deleted or restored")
        kopf.event(body, type="Warning", reason=Reason.POLICY_IN_USE, message=message)
        raise kopf.TemporaryError(message, delay=5)


@kopf.timer(G, V, "riskpolicies", interval=10.0)
async def policy_sessions(body: kopf.Body, namespace: str, name: str,
                          sessions_by_policy: kopf.Index[tuple[str, str], str], **_: Any) -> None:
    try:
        await policy_reconcile.reconcile(dict(body), list(sessions_by_policy.get((namespace, name), [])))
    except errors.OperatorError as exc:
        metrics.RECONCILE_FAILURES.labels("RiskPolicy", exc.reason).inc()


# ------------------------------------------------------------------ liveness

@kopf.on.probe(id="watchAge")
def watch_age(**_: Any) -> float:
    """Seconds since the leader's own Lease renewal came back through a watch; too long fails liveness."""
    current = leader.CURRENT
    if current is None:
        return 0.0
    age = time.monotonic() - current.canary_seen
    metrics.WATCH_AGE.set(age)
    if age > CANARY_MAX_AGE:
        raise kopf.PermanentError(f"no watch event from the lease canary for {age:.0f}s")
    return age


# ------------------------------------------------------------------ backups
# A Backup becomes one Job (one-shot) or CronJob (spec.schedule); the run in that Job reports into the
# Backup's status. Reconciled on every Backup event and every BACKUP_INTERVAL seconds (nextScheduleTime
# moves on, a Job may fail without the run reporting). Children and the sessions' model URIs come from
# indexes. See reconcile/backup.py.


@kopf.index("batch", "v1", "jobs", labels={names.LABEL_BACKUP: kopf.PRESENT})
def backup_jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, labels[names.LABEL_BACKUP]): dict(body)}


@kopf.index("batch", "v1", "cronjobs", labels={names.LABEL_BACKUP: kopf.PRESENT})
def backup_cronjobs(namespace: str, labels: kopf.Labels, body: kopf.Body,
                    **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, labels[names.LABEL_BACKUP]): dict(body)}


@kopf.index(G, V, "tradingsessions")
def session_models(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    return {(namespace, name): str(((spec.get("strategy") or {}).get("model") or {}).get("uri") or "")}


async def _reconcile_backup(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                            backup_jobs: kopf.Index[tuple[str, str], dict[str, Any]],
                            backup_cronjobs: kopf.Index[tuple[str, str], dict[str, Any]],
                            session_models: kopf.Index[tuple[str, str], str]) -> None:
    snapshot = dict(body)
    ns, name = snapshot["metadata"]["namespace"], snapshot["metadata"]["name"]
    session = str((snapshot.get("spec") or {}).get("sessionRef", {}).get("name", ""))
    cronjob = next(iter(backup_cronjobs.get((ns, name), [])), None)
    model_uri = next(iter(session_models.get((ns, session), [])), "") or None
    try:
        await backup_reconcile.reconcile(
            snapshot, list(backup_jobs.get((ns, name), [])), cronjob, model_uri, ctx(memo).settings,
            _poster(body))
    except errors.OperatorError as exc:
        metrics.RECONCILE_FAILURES.labels("Backup", exc.reason).inc()
        if not isinstance(exc, errors.ApiConflict):
            logger.warning("backup reconcile failed (%s): %s", exc.reason, exc)


@kopf.on.event(G, V, "backups")
async def backup_event(type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
                       logger: kopf.Logger, backup_jobs: kopf.Index[tuple[str, str], dict[str, Any]],
                       backup_cronjobs: kopf.Index[tuple[str, str], dict[str, Any]],
                       session_models: kopf.Index[tuple[str, str], str], **_: Any) -> None:
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        backup_reconcile.forget_metrics(namespace, name)
        return
    await _reconcile_backup(body, memo, logger, backup_jobs, backup_cronjobs, session_models)


@kopf.timer(G, V, "backups", interval=BACKUP_INTERVAL, initial_delay=BACKUP_INTERVAL)
async def backup_timer(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                       backup_jobs: kopf.Index[tuple[str, str], dict[str, Any]],
                       backup_cronjobs: kopf.Index[tuple[str, str], dict[str, Any]],
                       session_models: kopf.Index[tuple[str, str], str], **_: Any) -> None:
    await _reconcile_backup(body, memo, logger, backup_jobs, backup_cronjobs, session_models)
