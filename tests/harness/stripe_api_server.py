"""A local Stripe API for the tests, speaking its documented wire format closely enough for
stripe-python (unmodified, `base_addresses={"api": …}` pointed here) plus the hosted pages a browser
visits, and Stripe's webhook signing.

HTTPS with a certificate from the test CA (tests/gmail_api_server.HttpsFake). Requests are
form-encoded with Stripe's bracket notation (`line_items[0][price]=…`) and authenticated with
`Authorization: Bearer <secret key>`; answers are JSON, errors `{"error": {"type", "code",
"message", "param"}}` with Stripe's statuses. Every API request must carry an `Idempotency-Key`
made by our code (`aiemaily-…`): one without is answered 400 and recorded in `violations`, so a
test that asserts `violations == []` fails for any call that lacks one. A key seen before replays
its first answer (`Idempotent-Replayed: true`); the same key with other parameters is Stripe's
400 idempotency_error.

API (https://docs.stripe.com/api), API version 2025-03-31 and later (period on the items):
  POST   /v1/customers                      email, metadata
  DELETE /v1/customers/{id}                 {"id", "object": "customer", "deleted": true}; cancels its subscriptions
  POST   /v1/checkout/sessions              mode=subscription, customer, client_reference_id,
                                            line_items[0][price|quantity], success_url, cancel_url,
                                            subscription_data[metadata]
  POST   /v1/billing_portal/sessions        customer, return_url
  GET    /v1/subscriptions/{id}             the current subscription (a cancelled one stays readable)
  DELETE /v1/subscriptions/{id}             cancel now (status canceled, customer.subscription.deleted)
  GET    /v1/events/{id}                    an event this server emitted
Hosted pages (no API key, as on checkout.stripe.com / billing.stripe.com):
  GET /pay/{session}   a page with a Pay button and a cancel link; POST /pay/{session} completes the
                       checkout (subscription, events) and redirects to success_url
  GET /portal/{session} a page with a link back to return_url
Events: every state change appends events (`events`); a test delivers them itself, in any order,
with `signed(event, secret)`, or sets `deliver_to = (url, secret)` to have them POSTed as Stripe does.
"""

import hashlib
import hmac
import json
import re
import threading
import time
import urllib.request
import uuid
from html import escape
from urllib.parse import parse_qsl

from tests.harness.gmail_api_server import HttpsFake, Recorded, Response

API_VERSION = "2026-10-28.endive"
PERIOD = 30 * 24 * 3600


def _error(status: int, message: str, *, type_: str = "invalid_request_error", code: str = "", param: str = ""):
    body = {"type": type_, "message": message}
    if code:
        body["code"] = code
    if param:
        body["param"] = param
    return Response.json(status, {"error": body})


def decode_form(body: bytes) -> dict:
    """Stripe's form encoding: `a[b][0][c]=v` → {"a": {"b": [{"c": "v"}]}}."""
    root: dict = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def listify(node):
        if isinstance(node, dict):
            node = {k: listify(v) for k, v in node.items()}
            if node and all(k.isdigit() for k in node):
                return [node[k] for k in sorted(node, key=int)]
        return node

    return listify(root)


def signed(event: dict, secret: str, *, timestamp: int | None = None, payload: bytes | None = None) -> tuple:
    """(payload, Stripe-Signature header) as Stripe signs a delivery: v1 = HMAC-SHA256 over `t.payload`."""
    payload = payload if payload is not None else json.dumps(event, indent=2).encode()
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, f"t={t},v1={mac}"


class FakeStripe(HttpsFake):
    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.token = f"sk_test_{uuid.uuid4().hex}"
            self.customers: dict[str, dict] = {}
            self.sessions: dict[str, dict] = {}
            self.portal_sessions: dict[str, dict] = {}
            self.subscriptions: dict[str, dict] = {}
            self.events: list[dict] = []
            self.idempotent: dict[str, tuple] = {}
            self.violations: list[str] = []
            self.clock_offset = 0
            self.deliver_to: tuple[str, str] | None = None
            self.delivery_ca: str | None = None
            self.deliveries: list[tuple[str, int]] = []

    # --- clock and ids -------------------------------------------------------------------------
    def now(self) -> int:
        return int(time.time()) + self.clock_offset

    def advance(self, seconds: int) -> None:
        """Let Stripe's clock move on, so the next events are `seconds` newer."""
        with self.lock:
            self.clock_offset += seconds

    @staticmethod
    def _id(prefix: str) -> str:
        return f"{prefix}_{uuid.uuid4().hex[:24]}"

    # --- request handling ------------------------------------------------------------------------
    def unauthorized(self) -> Response:
        return _error(401, "Invalid API Key provided.")

    def handle(self, request: Recorded) -> Response | None:
        if request.path.startswith(("/pay/", "/portal/")):
            with self.lock:
                self.requests.append(request)
                return self.page(request)
        return super().handle(request)

    def route(self, request: Recorded) -> Response:
        key = request.headers.get("idempotency-key", "")
        if not key.startswith("aiemaily-"):
            self.violations.append(f"{request.method} {request.path} without our Idempotency-Key ({key!r})")
            return _error(400, "test server: every call must carry an Idempotency-Key made by Aiemaily")
        params = decode_form(request.body) if request.method == "POST" else {}
        fingerprint = (request.method, request.path, json.dumps(params, sort_keys=True))
        if request.method != "GET" and key in self.idempotent:
            first_fingerprint, first_response = self.idempotent[key]
            if first_fingerprint != fingerprint:
                return _error(400, "Keys for idempotent requests can only be used with the same parameters they "
                                   "were first used with.", type_="idempotency_error")
            return Response(first_response.status, first_response.body,
                            {**first_response.headers, "Idempotent-Replayed": "true"})
        response = self._dispatch(request, params)
        if request.method != "GET":
            self.idempotent[key] = (fingerprint, response)
        return response

    def _dispatch(self, request: Recorded, params: dict) -> Response:
        parts = request.path.strip("/").split("/")
        method = request.method
        if parts[:2] == ["v1", "customers"]:
            if len(parts) == 2 and method == "POST":
                return self._customer_create(params)
            if len(parts) == 3 and method == "DELETE":
                return self._customer_delete(parts[2])
        if parts[:3] == ["v1", "checkout", "sessions"] and len(parts) == 3 and method == "POST":
            return self._checkout_create(params)
        if parts[:3] == ["v1", "billing_portal", "sessions"] and len(parts) == 3 and method == "POST":
            return self._portal_create(params)
        if parts[:2] == ["v1", "subscriptions"] and len(parts) == 3:
            subscription = self.subscriptions.get(parts[2])
            if subscription is None:
                return _error(404, f"No such subscription: '{parts[2]}'", code="resource_missing", param="id")
            if method == "GET":
                return Response.json(200, subscription)
            if method == "DELETE":
                self.cancel(parts[2])
                return Response.json(200, self.subscriptions[parts[2]])
        if parts[:2] == ["v1", "events"] and len(parts) == 3 and method == "GET":
            for event in self.events:
                if event["id"] == parts[2]:
                    return Response.json(200, event)
            return _error(404, f"No such event: '{parts[2]}'", code="resource_missing", param="id")
        return _error(404, f"Unrecognized request URL ({method}: {request.path}).")

    def _customer_create(self, params: dict) -> Response:
        customer = {"id": self._id("cus"), "object": "customer", "email": params.get("email"),
                    "metadata": params.get("metadata") or {}, "created": self.now(), "livemode": False}
        self.customers[customer["id"]] = customer
        return Response.json(200, customer)

    def _customer_delete(self, customer_id: str) -> Response:
        if customer_id not in self.customers:
            return _error(404, f"No such customer: '{customer_id}'", code="resource_missing", param="id")
        for subscription in list(self.subscriptions.values()):
            if subscription["customer"] == customer_id and subscription["status"] != "canceled":
                self.cancel(subscription["id"])
        del self.customers[customer_id]
        return Response.json(200, {"id": customer_id, "object": "customer", "deleted": True})

    def _checkout_create(self, params: dict) -> Response:
        for name in ("mode", "success_url", "cancel_url", "line_items"):
            if not params.get(name):
                return _error(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        if params["mode"] != "subscription":
            return _error(400, "Invalid mode", param="mode")
        customer = params.get("customer")
        if customer and customer not in self.customers:
            return _error(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
        session_id = self._id("cs_test")
        session = {
            "id": session_id, "object": "checkout.session", "mode": "subscription", "status": "open",
            "customer": customer, "client_reference_id": params.get("client_reference_id"),
            "success_url": params["success_url"], "cancel_url": params["cancel_url"],
            "line_items_params": params["line_items"],
            "subscription_metadata": (params.get("subscription_data") or {}).get("metadata") or {},
            "subscription": None, "payment_status": "unpaid", "url": f"{self.origin}/pay/{session_id}",
            "created": self.now(), "livemode": False,
        }
        self.sessions[session_id] = session
        return Response.json(200, self._public_session(session))

    @staticmethod
    def _public_session(session: dict) -> dict:
        return {k: v for k, v in session.items() if k not in ("line_items_params", "subscription_metadata")}

    def _portal_create(self, params: dict) -> Response:
        customer = params.get("customer")
        if customer not in self.customers:
            return _error(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
        session_id = self._id("bps")
        session = {"id": session_id, "object": "billing_portal.session", "customer": customer,
                   "return_url": params.get("return_url"), "url": f"{self.origin}/portal/{session_id}",
                   "created": self.now(), "livemode": False}
        self.portal_sessions[session_id] = session
        return Response.json(200, session)

    # --- hosted pages --------------------------------------------------------------------------
    def page(self, request: Recorded) -> Response:
        kind, _, session_id = request.path.strip("/").partition("/")
        if kind == "pay" and session_id in self.sessions:
            session = self.sessions[session_id]
            if request.method == "POST":
                self.complete_checkout(session_id)
                target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
                return Response(303, b"", {"Location": target})
            html = (f"<!doctype html><title>Pay</title><h1>Stripe test checkout</h1>"
                    f"<form method=post action=/pay/{escape(session_id)}><button id=pay>Pay</button></form>"
                    f"<a id=cancel href=\"{escape(session['cancel_url'])}\">Cancel</a>")
            return Response(200, html.encode(), {"Content-Type": "text/html; charset=utf-8"})
        if kind == "portal" and session_id in self.portal_sessions:
            session = self.portal_sessions[session_id]
            html = (f"<!doctype html><title>Portal</title><h1>Stripe test portal</h1>"
                    f"<a id=return href=\"{escape(session['return_url'])}\">Return</a>")
            return Response(200, html.encode(), {"Content-Type": "text/html; charset=utf-8"})
        return Response(404, b"not found", {"Content-Type": "text/plain"})

    # --- state changes (each emits the events Stripe would) --------------------------------------
    def _emit(self, kind: str, obj: dict) -> dict:
        event = {"id": self._id("evt"), "object": "event", "api_version": API_VERSION, "created": self.now(),
                 "type": kind, "data": {"object": json.loads(json.dumps(obj))}, "livemode": False,
                 "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}}
        self.events.append(event)
        return event

    def _invoice(self, subscription: dict, status: str) -> dict:
        return {"id": self._id("in"), "object": "invoice", "customer": subscription["customer"], "status": status,
                "parent": {"type": "subscription_details",
                           "subscription_details": {"subscription": subscription["id"],
                                                    "metadata": subscription["metadata"]}},
                "created": self.now(), "livemode": False}

    def complete_checkout(self, session_id: str, *, status: str = "active") -> list[dict]:
        """The customer paid on the hosted page: a subscription and Stripe's three events."""
        with self.lock:
            session = self.sessions[session_id]
            price = session["line_items_params"][0]["price"]
            now = self.now()
            subscription = {
                "id": self._id("sub"), "object": "subscription", "customer": session["customer"], "status": status,
                "cancel_at_period_end": False, "canceled_at": None, "created": now,
                "metadata": dict(session["subscription_metadata"]), "livemode": False,
                "items": {"object": "list", "data": [{
                    "id": self._id("si"), "object": "subscription_item", "quantity": 1,
                    "price": {"id": price, "object": "price"},
                    "current_period_start": now, "current_period_end": now + PERIOD}]},
            }
            self.subscriptions[subscription["id"]] = subscription
            session.update(status="complete", payment_status="paid", subscription=subscription["id"])
            events = [self._emit("customer.subscription.created", subscription),
                      self._emit("checkout.session.completed", self._public_session(session)),
                      self._emit("invoice.paid", self._invoice(subscription, "paid"))]
        self._deliver(events)
        return events

    def update(self, subscription_id: str, **changes) -> dict:
        """Change a subscription (portal plan change, cancel at period end, renewal…)."""
        with self.lock:
            subscription = self.subscriptions[subscription_id]
            if "price" in changes:
                subscription["items"]["data"][0]["price"] = {"id": changes.pop("price"), "object": "price"}
            if "period_end" in changes:
                subscription["items"]["data"][0]["current_period_end"] = changes.pop("period_end")
            subscription.update(changes)
            event = self._emit("customer.subscription.updated", subscription)
        self._deliver([event])
        return event

    def fail_payment(self, subscription_id: str) -> list[dict]:
        with self.lock:
            subscription = self.subscriptions[subscription_id]
            subscription["status"] = "past_due"
            events = [self._emit("invoice.payment_failed", self._invoice(subscription, "open")),
                      self._emit("customer.subscription.updated", subscription)]
        self._deliver(events)
        return events

    def pay(self, subscription_id: str) -> list[dict]:
        with self.lock:
            subscription = self.subscriptions[subscription_id]
            subscription["status"] = "active"
            events = [self._emit("invoice.paid", self._invoice(subscription, "paid")),
                      self._emit("customer.subscription.updated", subscription)]
        self._deliver(events)
        return events

    def cancel(self, subscription_id: str) -> dict:
        with self.lock:
            subscription = self.subscriptions[subscription_id]
            subscription.update(status="canceled", canceled_at=self.now(), cancel_at_period_end=False)
            event = self._emit("customer.subscription.deleted", subscription)
        self._deliver([event])
        return event

    # --- webhook delivery, as Stripe does it -------------------------------------------------------
    def _deliver(self, events: list[dict]) -> None:
        if self.deliver_to is None:
            return
        url, secret = self.deliver_to

        def post():
            time.sleep(0.2)  # after the redirect, like a real delivery
            for event in events:
                payload, header = signed(event, secret)
                request = urllib.request.Request(url, data=payload, method="POST", headers={
                    "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header,
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"})
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - test URL
                        self.deliveries.append((event["id"], answer.status))
                except OSError as exc:
                    self.deliveries.append((event["id"], getattr(exc, "code", 0)))

        threading.Thread(target=post, daemon=True).start()
