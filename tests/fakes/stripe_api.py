"""A local HTTP server that answers like the Stripe API, for driving the real `stripe` SDK.

It covers what TicketFlow uses: `POST /v1/payment_intents` (confirmed at creation),
`GET /v1/payment_intents/{id}`, `POST /v1/refunds`, `GET /v1/refunds/{id}`. Bodies are
form-encoded as the SDK sends them; answers are JSON shaped like real Stripe objects
and errors. Every request is recorded for assertions, `Idempotency-Key` replays the
original answer (and a reused key with other parameters gets Stripe's 400
`idempotency_error`), and the bearer key is checked.

Usage:
    with FakeStripe() as fake:
        processor = StripeProcessor(fake.api_key, api_base=fake.url)
        ...
        assert fake.requests[0].form["amount"] == "5000"

Test payment methods (as in Stripe test mode):
    `pm_card_visa`, `pm_card_mastercard`: succeed.
    `pm_card_chargeDeclined`: 402 `card_declined` / `generic_decline`.
    `pm_card_chargeDeclinedInsufficientFunds`: 402 `card_declined` / `insufficient_funds`.
    `pm_card_authenticationRequired`: 200 with status `requires_action` (3-D Secure).
    anything else: 400 `resource_missing` on param `payment_method`.

Card tokens (`tok_visa`, `tok_mastercard`, `tok_chargeDeclined`,
`tok_chargeDeclinedInsufficientFunds`) are accepted only as
`payment_method_data[type]=card` + `payment_method_data[card][token]=tok_...`, as Stripe
does: the intent gets a fresh `pm_...` and behaves like the matching `pm_card_...`. A token
passed as `payment_method` is a `resource_missing` PaymentMethod, as in Stripe.
"""

from __future__ import annotations

import json
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_API_KEY = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc"

SUCCEEDING_PAYMENT_METHODS = frozenset({"pm_card_visa", "pm_card_mastercard"})
DECLINING_PAYMENT_METHODS: dict[str, tuple[str, str]] = {
    "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
}
AUTHENTICATION_REQUIRED_PAYMENT_METHODS = frozenset({"pm_card_authenticationRequired"})
# Stripe's test card tokens and the test PaymentMethod each one behaves like.
CARD_TOKENS = {
    "tok_visa": "pm_card_visa",
    "tok_mastercard": "pm_card_mastercard",
    "tok_chargeDeclined": "pm_card_chargeDeclined",
    "tok_chargeDeclinedInsufficientFunds": "pm_card_chargeDeclinedInsufficientFunds",
}

_ALPHABET = string.ascii_letters + string.digits

JsonObject = dict[str, Any]


def stripe_id(prefix: str) -> str:
    """Return an id shaped like Stripe's: `pi_`, `ch_`, `re_`... and 24 alphanumerics."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it.

    `form` holds the decoded form body with Stripe's bracketed keys kept flat
    (`metadata[booking_id]`, `automatic_payment_methods[enabled]`); `headers` has
    lower-cased names.
    """

    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    status: int = 0
    replayed: bool = False

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def bearer_key(self) -> str | None:
        auth = self.authorization or ""
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None


@dataclass
class _Answer:
    status: int
    body: JsonObject
    fingerprint: tuple[str, str, tuple[tuple[str, str], ...]] | None = None


@dataclass
class _Failure:
    status: int
    remaining: int | None  # None: until `recover()`


@dataclass
class _State:
    payment_intents: dict[str, JsonObject] = field(default_factory=dict)
    charges: dict[str, JsonObject] = field(default_factory=dict)
    refunds: dict[str, JsonObject] = field(default_factory=dict)
    idempotent: dict[tuple[str, str], _Answer] = field(default_factory=dict)


class FakeStripe:
    """A Stripe-like API on 127.0.0.1 in a background thread.

    Args:
        api_key: The only secret key the fake accepts as `Authorization: Bearer ...`.
        port: Port to bind; 0 picks a free one.
    """

    def __init__(self, *, api_key: str = DEFAULT_API_KEY, port: int = 0) -> None:
        self.api_key = api_key
        self._port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._state = _State()
        self._failure: _Failure | None = None
        self._delay_s = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeStripe:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-stripe",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; later requests fail to connect, like a Stripe outage."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to pass as the SDK's `api` base address."""
        return f"http://127.0.0.1:{self._port}"

    # -- inspection and fault injection ----------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str = "POST") -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path and r.method == method]

    @property
    def payment_intents(self) -> dict[str, JsonObject]:
        with self._lock:
            return dict(self._state.payment_intents)

    @property
    def refunds(self) -> dict[str, JsonObject]:
        with self._lock:
            return dict(self._state.refunds)

    def fail_next(self, status: int = 500, *, times: int | None = 1) -> None:
        """Answer the next `times` requests (None: all until `recover()`) with a Stripe API error."""
        with self._lock:
            self._failure = _Failure(status=status, remaining=times)

    def delay(self, seconds: float) -> None:
        """Wait this long before answering each request (for client timeouts)."""
        with self._lock:
            self._delay_s = seconds

    def recover(self) -> None:
        """Undo `fail_next` and `delay`."""
        with self._lock:
            self._failure = None
            self._delay_s = 0.0

    def reset(self) -> None:
        """Forget requests, objects, idempotency keys and injected faults."""
        with self._lock:
            self._requests.clear()
            self._state = _State()
            self._failure = None
            self._delay_s = 0.0

    # -- request handling (called from server threads) ---------------------------------

    def _handle(
        self, method: str, path: str, form: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, JsonObject, bool]:
        with self._lock:
            delay = self._delay_s
        if delay:
            time.sleep(delay)
        with self._lock:
            status, body, replayed = self._answer(method, path, form, headers)
            self._requests.append(
                RecordedRequest(method, path, form, headers, status=status, replayed=replayed)
            )
        return status, body, replayed

    def _answer(
        self, method: str, path: str, form: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, JsonObject, bool]:
        failure = self._failure
        if failure is not None:
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failure = None
            return failure.status, _error("api_error", "An unknown error occurred"), False

        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            return 401, _invalid_api_key(auth), False

        key = headers.get("idempotency-key")
        fingerprint = (method, path, tuple(sorted(form.items())))
        if method == "POST" and key:
            seen = self._state.idempotent.get((self.api_key, key))
            if seen is not None:
                if seen.fingerprint != fingerprint:
                    return 400, _idempotency_error(key), False
                return seen.status, seen.body, True

        status, body = self._route(method, path, form)
        # Stripe saves results once the endpoint ran, errors included, but not 5xx.
        if method == "POST" and key and status < 500:
            self._state.idempotent[(self.api_key, key)] = _Answer(status, body, fingerprint)
        return status, body, False

    def _route(self, method: str, path: str, form: dict[str, str]) -> tuple[int, JsonObject]:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/payment_intents":
            return self._create_payment_intent(form)
        if method == "POST" and path == "/v1/refunds":
            return self._create_refund(form)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "payment_intents"]:
            return _found(self._state.payment_intents.get(parts[2]), "payment_intent", parts[2])
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "refunds"]:
            return _found(self._state.refunds.get(parts[2]), "refund", parts[2])
        return 404, _error(
            "invalid_request_error",
            f"Unrecognized request URL ({method}: {path}).",
        )

    def _create_payment_intent(self, form: dict[str, str]) -> tuple[int, JsonObject]:
        amount = _positive_int(form.get("amount"))
        if amount is None:
            return 400, _error(
                "invalid_request_error",
                "Invalid positive integer",
                code="parameter_invalid_integer",
                param="amount",
            )
        currency = form.get("currency")
        if not currency:
            return 400, _error(
                "invalid_request_error",
                "Missing required param: currency.",
                code="parameter_missing",
                param="currency",
            )
        payment_method = form.get("payment_method")
        card_token = form.get("payment_method_data[card][token]")
        behaves_like = payment_method
        if "payment_method_data[type]" in form:
            if payment_method:
                return 400, _error(
                    "invalid_request_error",
                    "You cannot provide both `payment_method` and `payment_method_data`.",
                    param="payment_method_data",
                )
            if form["payment_method_data[type]"] != "card" or card_token not in CARD_TOKENS:
                return 400, _error(
                    "invalid_request_error",
                    f"No such token: '{card_token}'",
                    code="resource_missing",
                    param="payment_method_data[card][token]",
                )
            behaves_like = CARD_TOKENS[card_token]
            payment_method = stripe_id("pm_")
        confirm = form.get("confirm") == "true"
        if confirm and not payment_method:
            return 400, _error(
                "invalid_request_error",
                "You must provide a payment_method to confirm this PaymentIntent.",
                code="parameter_missing",
                param="payment_method",
            )
        redirects_allowed = (
            form.get("automatic_payment_methods[enabled]") == "true"
            and form.get("automatic_payment_methods[allow_redirects]") != "never"
        )
        if confirm and redirects_allowed and not form.get("return_url"):
            return 400, _error(
                "invalid_request_error",
                "This PaymentIntent is configured to accept payment methods that may redirect; "
                "you must provide a `return_url` or set "
                "`automatic_payment_methods[allow_redirects]` to `never`.",
                param="return_url",
            )
        if behaves_like and not (
            behaves_like in SUCCEEDING_PAYMENT_METHODS
            or behaves_like in DECLINING_PAYMENT_METHODS
            or behaves_like in AUTHENTICATION_REQUIRED_PAYMENT_METHODS
        ):
            return 400, _error(
                "invalid_request_error",
                f"No such PaymentMethod: '{payment_method}'",
                code="resource_missing",
                param="payment_method",
            )

        intent = _payment_intent(amount, currency.lower(), payment_method, form)
        self._state.payment_intents[intent["id"]] = intent
        if not confirm:
            return 200, intent
        assert behaves_like is not None

        if behaves_like in AUTHENTICATION_REQUIRED_PAYMENT_METHODS:
            intent["status"] = "requires_action"
            intent["next_action"] = {"type": "use_stripe_sdk", "use_stripe_sdk": {}}
            return 200, intent

        charge = _charge(intent, paid=behaves_like in SUCCEEDING_PAYMENT_METHODS)
        self._state.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        if behaves_like in SUCCEEDING_PAYMENT_METHODS:
            intent["status"] = "succeeded"
            intent["amount_received"] = amount
            return 200, intent

        decline_code, message = DECLINING_PAYMENT_METHODS[behaves_like]
        charge["failure_code"] = "card_declined"
        charge["failure_message"] = message
        intent["status"] = "requires_payment_method"
        error = _card_error(decline_code, message, charge_id=charge["id"])
        intent["last_payment_error"] = dict(error)
        error["payment_intent"] = intent
        return 402, {"error": error}

    def _create_refund(self, form: dict[str, str]) -> tuple[int, JsonObject]:
        charge_id = form.get("charge")
        intent_id = form.get("payment_intent")
        if not charge_id and not intent_id:
            return 400, _error(
                "invalid_request_error",
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
                code="parameter_missing",
            )
        if intent_id and not charge_id:
            intent = self._state.payment_intents.get(intent_id)
            if intent is None:
                return 400, _no_such("payment_intent", intent_id)
            charge_id = intent.get("latest_charge")
            if not charge_id or self._state.charges[charge_id]["status"] != "succeeded":
                return 400, _error(
                    "invalid_request_error",
                    f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                    code="charge_not_refundable",
                )
        assert charge_id is not None
        charge = self._state.charges.get(charge_id)
        if charge is None:
            return 400, _no_such("charge", charge_id, param="charge")
        if charge["status"] != "succeeded":
            return 400, _error(
                "invalid_request_error",
                f"Charge {charge_id} has no successful payment to refund.",
                code="charge_not_refundable",
            )
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            return 400, _error(
                "invalid_request_error",
                f"Charge {charge_id} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = remaining if "amount" not in form else _positive_int(form["amount"])
        if amount is None:
            return 400, _error(
                "invalid_request_error",
                "Invalid positive integer",
                code="parameter_invalid_integer",
                param="amount",
            )
        if amount > remaining:
            return 400, _error(
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
                code="amount_too_large",
                param="amount",
            )
        refund = {
            "id": stripe_id("re_"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": stripe_id("txn_"),
            "charge": charge_id,
            "created": int(time.time()),
            "currency": charge["currency"],
            "destination_details": None,
            "metadata": _metadata(form),
            "payment_intent": charge["payment_intent"],
            "reason": form.get("reason"),
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._state.refunds[refund["id"]] = refund
        return 200, refund


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeStripe/1.0"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        fake: FakeStripe = self.server.fake  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8") if length else ""
        query = raw if method == "POST" else split.query
        form = dict(parse_qsl(query, keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, body, replayed = fake._handle(method, split.path, form, headers)
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", stripe_id("req_")[:18])
        if headers.get("idempotency-key"):
            self.send_header("Idempotency-Key", headers["idempotency-key"])
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


# -- Stripe-shaped objects ---------------------------------------------------------------


def _metadata(form: dict[str, str]) -> dict[str, str]:
    return {
        name[len("metadata[") : -1]: value
        for name, value in form.items()
        if name.startswith("metadata[") and name.endswith("]")
    }


def _positive_int(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    number = int(value)
    return number if number > 0 else None


def _payment_intent(
    amount: int, currency: str, payment_method: str | None, form: dict[str, str]
) -> JsonObject:
    intent_id = stripe_id("pi_")
    automatic = form.get("automatic_payment_methods[enabled]") == "true"
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": 0,
        "automatic_payment_methods": (
            {
                "enabled": True,
                "allow_redirects": form.get("automatic_payment_methods[allow_redirects]", "always"),
            }
            if automatic
            else None
        ),
        "canceled_at": None,
        "capture_method": form.get("capture_method", "automatic_async"),
        "client_secret": f"{intent_id}_secret_{stripe_id('')}",
        "confirmation_method": "automatic",
        "created": int(time.time()),
        "currency": currency,
        "customer": form.get("customer"),
        "description": form.get("description"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": _metadata(form),
        "next_action": None,
        "payment_method": payment_method,
        "payment_method_types": ["card"],
        "status": "requires_confirmation" if payment_method else "requires_payment_method",
    }


def _charge(intent: JsonObject, *, paid: bool) -> JsonObject:
    return {
        "id": stripe_id("ch_"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": intent["amount"] if paid else 0,
        "amount_refunded": 0,
        "captured": paid,
        "created": int(time.time()),
        "currency": intent["currency"],
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": dict(intent["metadata"]),
        "paid": paid,
        "payment_intent": intent["id"],
        "payment_method": intent["payment_method"],
        "refunded": False,
        "status": "succeeded" if paid else "failed",
    }


def _error(
    error_type: str, message: str, *, code: str | None = None, param: str | None = None
) -> JsonObject:
    error: JsonObject = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param is not None:
        error["param"] = param
    return {"error": error}


def _card_error(decline_code: str, message: str, *, charge_id: str) -> JsonObject:
    return {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": decline_code,
        "message": message,
        "charge": charge_id,
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "advice_code": "try_again_later" if decline_code == "generic_decline" else None,
    }


def _no_such(kind: str, object_id: str, *, param: str | None = None) -> JsonObject:
    return _error(
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param or kind,
    )


def _found(obj: JsonObject | None, kind: str, object_id: str) -> tuple[int, JsonObject]:
    return (200, obj) if obj is not None else (404, _no_such(kind, object_id, param="id"))


def _invalid_api_key(authorization: str) -> JsonObject:
    key = authorization.removeprefix("Bearer ").strip()
    if not key:
        return _error(
            "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth.",
        )
    # Stripe masks all but the last four characters, and so does the fake.
    return _error("invalid_request_error", f"Invalid API Key provided: {key[:8]}****{key[-4:]}")


def _idempotency_error(key: str) -> JsonObject:
    return _error(
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
    )


__all__ = [
    "AUTHENTICATION_REQUIRED_PAYMENT_METHODS",
    "DECLINING_PAYMENT_METHODS",
    "DEFAULT_API_KEY",
    "SUCCEEDING_PAYMENT_METHODS",
    "FakeStripe",
    "RecordedRequest",
    "stripe_id",
]
