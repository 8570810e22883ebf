"""The bank-charge service.

- `POST /breaker/callback`: breaker-router's callback. Monitor groups tagged `bank_code:XXXX`
  open and close breaker `bank-charge` for key `XXXX`.
- `POST /breaker/fx-quotes/callback`: a second breaker without a key: the whole FX vendor.
- `POST /charges` `{"bank_code": "0001", "amount": 100}` and `POST /quotes`
  `{"base": "USD", "quote": "JPY"}` call the vendors only while their breakers let them.
- `GET /breakers` lists the breakers (for the demo and for people).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from breaker_client import (
    BreakerOpen,
    Breakers,
    CallbackEvent,
    WriteResult,
    apply_callback,
    callback_blueprint,
)
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from router.keys import DEFAULT_BREAKER_PREFIX
from services_example.vendor import FakeBank, FakeFxQuotes

BANK_BREAKER = "bank-charge"
BANK_TAG = "bank_code"
FX_BREAKER = "fx-quotes"
BANK_CODE = re.compile(r"^[0-9]{4}$")


def _refusal(breakers: Breakers, refused: BreakerOpen, what: str) -> tuple[dict[str, Any], int]:
    """503 naming the breaker that refused: the key's own, or the whole vendor's."""
    state = breakers.state(refused.name, refused.breaker_key, local=True)
    if state.state == "recovering" and state.ramp_share is not None:
        why = f"recovering, letting {state.ramp_share:.0%} of calls through"
    else:
        why = refused.state.replace("_", " ")
    if refused.key is not None and refused.breaker_key is None:
        why += f" for the whole {refused.name} vendor"
    return {
        "error": f"{what} is unavailable: circuit breaker {why}",
        "breaker": {
            "name": refused.name,
            "key": refused.breaker_key,
            "state": refused.state,
            "reason": refused.reason,
            "source": state.source,
            "since_ms": refused.since_ms,
        },
    }, 503


def _json_object() -> dict[str, Any]:
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object body")
    return payload


def create_app(
    config: Mapping[str, str] | None = None, *, breakers: Breakers | None = None
) -> Flask:
    env = os.environ if config is None else config
    for name in ("REDIS_URL", "ROUTER_SIGNING_SECRET"):
        if not env.get(name) and not (name == "REDIS_URL" and breakers):
            raise SystemExit(f"services_example: {name} is not set")
    if breakers is None:
        breakers = Breakers.from_url(
            env["REDIS_URL"],
            prefix=env.get("BREAKERS_PREFIX") or DEFAULT_BREAKER_PREFIX,
            ramp_window=float(env.get("BREAKER_RAMP_WINDOW", "60")),
        )
    bank, fx = FakeBank(), FakeFxQuotes()
    app = Flask(__name__)
    app.extensions["breakers"] = breakers
    app.extensions["vendors"] = (bank, fx)
    secret = env["ROUTER_SIGNING_SECRET"]

    def bank_breakers(event: CallbackEvent) -> list[WriteResult]:
        return apply_callback(breakers, event, BANK_BREAKER, tag=BANK_TAG)

    def fx_breaker(event: CallbackEvent) -> list[WriteResult]:
        return apply_callback(breakers, event, FX_BREAKER)

    app.register_blueprint(callback_blueprint(breakers, secret, bank_breakers))
    app.register_blueprint(
        callback_blueprint(
            breakers, secret, fx_breaker, path="/breaker/fx-quotes/callback", name="fx_callback"
        )
    )

    @app.post("/charges")
    def charge() -> tuple[dict[str, Any], int]:
        payload = _json_object()
        bank_code, amount = payload.get("bank_code"), payload.get("amount")
        if not isinstance(bank_code, str) or not BANK_CODE.match(bank_code):
            return {"error": f"bank_code: expected 4 digits as a string, got {bank_code!r}"}, 422
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return {"error": f"amount: expected a positive whole number, got {amount!r}"}, 422
        try:
            breakers.check(BANK_BREAKER, bank_code)
        except BreakerOpen as refused:
            return _refusal(breakers, refused, f"bank {bank_code}")
        result = bank.charge(bank_code, amount)
        return {"charge_id": result.charge_id, "bank_code": bank_code, "amount": amount}, 201

    @app.post("/quotes")
    def quote() -> tuple[dict[str, Any], int]:
        payload = _json_object()
        base, counter = payload.get("base", "USD"), payload.get("quote", "JPY")
        try:
            breakers.check(FX_BREAKER)
        except BreakerOpen as refused:
            return _refusal(breakers, refused, "the FX vendor")
        return {"base": base, "quote": counter, "rate": fx.quote(str(base), str(counter))}, 200

    @app.get("/breakers")
    def list_breakers() -> dict[str, Any]:
        return {"breakers": [state.to_dict() for state in breakers.list(local=True)]}

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "breakers": breakers.stats()}

    @app.errorhandler(ValueError)
    def bad_request(exc: ValueError) -> tuple[dict[str, Any], int]:
        return {"error": str(exc)}, 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        response = jsonify({"error": exc.description, "status": exc.code})
        response.status_code = exc.code or 500
        return response

    return app
