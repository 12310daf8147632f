"""A stand-in for Alpaca's Trading API on 127.0.0.1, answering with the recorded shapes.

Only the network is replaced: the adapter's TradingClient is pointed at this
server with ``url_override``, so alpaca-py builds the requests, sends them with
its requests session, raises its own APIError and parses its own models.

The server keeps a tiny order book keyed by ``client_order_id`` and enforces
the one rule the idempotency tests rely on: a second POST with a known
``client_order_id`` is refused with 422 / 40010001, like Alpaca. Faults can be
scheduled per route (status code, delay, before or after the order is created),
and every request is recorded with the time of an injectable clock.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import pathlib
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "alpaca"
OPEN = {"new", "accepted", "pending_new", "partially_filled", "held"}


def recorded(name: str) -> Any:
    return json.loads((DATA / f"{name}.json").read_text())


@dataclass
class Fault:
    method: str
    path: str
    status: int | None = None          # None: answer normally (only the delay applies)
    body: str = "error_internal"       # recorded error body to send with ``status``
    delay_s: float = 0.0               # sleep before answering (longer than the client's timeout = a timeout)
    after_create: bool = False         # POST /v2/orders: create the order first, then fail


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: float
    headers: dict[str, str] = field(default_factory=dict)


class FakeAlpaca:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.orders: dict[str, dict[str, Any]] = {}          # by Alpaca id, in creation order
        self.by_client: dict[str, str] = {}                  # client_order_id -> id
        self.activities: list[dict[str, Any]] = []
        self.positions: list[dict[str, Any]] | None = None   # None: the recorded positions.json
        # Orders and fills are stamped from an hour ago on, a second apart (the activities' ``after`` filter
        # and the adapter's 24 h fill lookback see them as today's).
        self.epoch = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self.orders_created = 0
        self._lock = threading.Lock()
        self._seq = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, payload, delay = fake.dispatch(self.command, self.path, raw, dict(self.headers))
                if delay:
                    time.sleep(delay)
                try:
                    data = b"" if payload is None else json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client gave up (timeout test): what it missed is the point

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-alpaca", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAlpaca:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    @contextmanager
    def running(self) -> Iterator[FakeAlpaca]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # -- test helpers

    def fail_next(self, method: str, path: str, **kwargs: Any) -> None:
        with self._lock:
            self.faults.append(Fault(method, path, **kwargs))

    def calls(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def fill(self, client_order_id: str, price: float, qty: float | None = None) -> None:
        with self._lock:
            order = self.orders[self.by_client[client_order_id]]
            total = float(order["qty"])
            done = float(order["filled_qty"])
            qty = total - done if qty is None else qty
            done += qty
            order["filled_qty"] = f"{done:g}"
            order["filled_avg_price"] = f"{price:g}"
            order["status"] = "filled" if done >= total else "partially_filled"
            self._seq += 1
            activity = recorded("activity_fill")
            stamp = self.epoch + dt.timedelta(seconds=self._seq)
            activity.update(
                id=f"{stamp:%Y%m%d%H%M%S}{self._seq:03d}::{uuid.uuid5(uuid.NAMESPACE_URL, f'fill-{self._seq}')}",
                transaction_time=stamp.isoformat().replace("+00:00", "Z"), price=f"{price:g}", qty=f"{qty:g}",
                side=order["side"], symbol=order["symbol"], order_id=order["id"],
                leaves_qty=f"{total - done:g}", cum_qty=f"{done:g}", order_status=order["status"],
                type="fill" if done >= total else "partial_fill")
            self.activities.append(activity)

    def set_positions(self, held: dict[str, tuple[float, float]]) -> None:
        """Positions (symbol -> (signed qty, average entry price)) in the recorded positions.json shape."""
        template = recorded("positions")[0]
        with self._lock:
            self.positions = [{**template, "symbol": symbol, "qty": f"{qty:g}", "qty_available": f"{qty:g}",
                               "side": "long" if qty > 0 else "short", "avg_entry_price": f"{avg:g}",
                               "cost_basis": f"{qty * avg:g}", "market_value": f"{qty * avg:g}"}
                              for symbol, (qty, avg) in held.items()]

    def add_foreign_order(self, client_order_id: str, symbol: str = "MSFT") -> dict[str, Any]:
        """An order placed by someone else in the same account (e.g. by hand in the dashboard)."""
        with self._lock:
            return self._create({"symbol": symbol, "qty": "2", "side": "sell", "type": "market",
                                 "time_in_force": "day", "client_order_id": client_order_id})

    # -- routing

    def dispatch(self, method: str, target: str, raw: bytes, headers: dict[str, str]
                 ) -> tuple[int, Any, float]:
        parsed = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(parsed.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(Seen(method, path, query, body, self.clock(), headers))
            fault = next((f for f in self.faults if f.method == method and f.path == path), None)
            if fault is not None:
                self.faults.remove(fault)
                if fault.status is not None and not fault.after_create:
                    return fault.status, recorded(fault.body), fault.delay_s
            status, payload = self._route(method, path, query, body)
            if fault is not None:
                if fault.status is not None:
                    return fault.status, recorded(fault.body), fault.delay_s
                return status, payload, fault.delay_s
            return status, payload, 0.0

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/v2/account":
            return 200, recorded("account")
        if method == "GET" and path == "/v2/positions":
            return 200, recorded("positions") if self.positions is None else copy.deepcopy(self.positions)
        if method == "POST" and path == "/v2/orders":
            if body.get("client_order_id") in self.by_client:
                return 422, recorded("error_duplicate_client_order_id")
            return 200, self._create(body)
        if method == "GET" and path == "/v2/orders":
            return 200, self._list(query)
        if method == "GET" and path == "/v2/orders:by_client_order_id":
            oid = self.by_client.get(query.get("client_order_id", ""))
            return (200, copy.deepcopy(self.orders[oid])) if oid else (404, recorded("error_order_not_found"))
        if path.startswith("/v2/orders/"):
            oid = path.rsplit("/", 1)[1]
            order = self.orders.get(oid)
            if order is None:
                return 404, recorded("error_order_not_found")
            if method == "GET":
                return 200, copy.deepcopy(order)
            if method == "DELETE":
                if order["status"] not in OPEN:
                    return 422, recorded("error_not_cancelable")
                order["status"] = "canceled"
                order["canceled_at"] = order["updated_at"]
                return 204, None
        if method == "GET" and path == "/v2/account/activities/FILL":
            return 200, self._activities(query)
        return 404, {"code": 40410000, "message": "endpoint not found"}

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        order = recorded("order")
        client_id = body.get("client_order_id") or str(uuid.uuid4())
        self._seq += 1
        stamp = self.epoch + dt.timedelta(seconds=self._seq)
        iso = stamp.isoformat().replace("+00:00", "Z")
        order.update(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"order-{client_id}")), client_order_id=client_id,
            symbol=body["symbol"], qty=f"{float(body['qty']):g}", side=body["side"], type=body["type"],
            order_type=body["type"], time_in_force=body["time_in_force"],
            limit_price=(f"{float(body['limit_price']):g}" if body.get("limit_price") is not None else None),
            created_at=iso, updated_at=iso, submitted_at=iso, status="accepted")
        self.orders[order["id"]] = order
        self.by_client[client_id] = order["id"]
        self.orders_created += 1
        return copy.deepcopy(order)

    def _list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        status = query.get("status", "open")
        orders = [o for o in self.orders.values()
                  if status == "all" or (o["status"] in OPEN) == (status == "open")]
        orders.sort(key=lambda o: o["submitted_at"], reverse=True)
        if "until" in query:
            until = query["until"].replace("+00:00", "Z")
            orders = [o for o in orders if o["submitted_at"] < until]
        return [copy.deepcopy(o) for o in orders[: int(query.get("limit", 50))]]

    def _activities(self, query: dict[str, str]) -> list[dict[str, Any]]:
        items = list(self.activities)
        if "after" in query:   # Alpaca: activities strictly after the given time
            after = dt.datetime.fromisoformat(query["after"].replace("Z", "+00:00"))
            items = [a for a in items
                     if dt.datetime.fromisoformat(a["transaction_time"].replace("Z", "+00:00")) > after]
        token = query.get("page_token")
        if token is not None:
            ids = [a["id"] for a in items]
            items = items[ids.index(token) + 1:] if token in ids else []
        return copy.deepcopy(items[: int(query.get("page_size", 100))])
