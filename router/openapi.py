"""The OpenAPI 3.1 description of every HTTP endpoint the router web serves (`GET /openapi.json`).

Written by hand, not derived from the code, so it says what a sender may rely on (which
credentials, which bodies, which answers); `tests/test_openapi.py` checks that it names every
route of the app's URL map and nothing else, so it cannot drift from what is served.
"""

from __future__ import annotations

from typing import Any

from router import __version__

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _strings(*names: str) -> dict[str, Schema]:
    return {name: {"type": "string"} for name in names}


_ERROR_STATUSES = {
    "400": "malformed: not JSON, unknown field or parameter, a value of the wrong form",
    "401": "no credentials, or not the configured token",
    "403": "authenticated but not allowed (an SNS topic not listed, an old SNS message, no "
    "ROUTER_ADMIN_TOKEN configured)",
    "404": "no such delivery, breaker or page",
    "405": "the path exists, the method does not",
    "409": "the action does not apply now (e.g. replaying what is not dead)",
    "413": "the body is larger than ROUTER_MAX_BODY_BYTES",
    "415": "a Content-Type the endpoint does not read",
    "422": "well-formed but unusable (no message, no transition, a missing value)",
    "503": "Redis (the queue) is unavailable: the sender should retry; Retry-After says when",
}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        status: {
            "description": _ERROR_STATUSES[status],
            "content": {JSON: {"schema": _ref("Error")}},
        }
        for status in statuses
    }


def _page_errors(*statuses: str) -> dict[str, Any]:
    """The dashboard answers a person: its refusals are pages that say what was wrong."""
    return {status: _html(_ERROR_STATUSES[status]) for status in statuses}


def _json(description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema or {"type": "object"}}}}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


_SEE_OTHER = {
    "description": "done (or refused with a message on the next page): see the page named in "
    "Location",
    "headers": {"Location": {"schema": {"type": "string"}}},
}

_INBOUND_SECURITY: list[dict[str, list[str]]] = [
    {"inboundBearer": []},
    {"inboundToken": []},
    {"inboundBasic": []},
]
_ADMIN_SECURITY: list[dict[str, list[str]]] = [{"adminBearer": []}]
# The pages read without credentials; their forms need the signed-in session cookie.
_SESSION_SECURITY: list[dict[str, list[str]]] = [{"uiSession": []}]


def _path_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


def _query(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string", "maxLength": 500},
    }


_FILTERS = [
    _query("breaker", "only rows about this breaker name"),
    _query("monitor", "only rows about this Datadog monitor id"),
    _query("callback", "only rows for this callback URL"),
]
_LIMIT = _query(
    "limit", "at most this many rows", {"type": "integer", "minimum": 1, "maximum": 500}
)
_STATUS = _query(
    "status",
    "only deliveries in this state",
    {"type": "string", "enum": ["queued", "retrying", "delivered", "dead"]},
)
_KEY = _query("key", "the breaker's key (none: the keyless breaker)")
_NAME = _path_param("name", "the breaker's name, e.g. bank-charge")
_DELIVERY_ID = _path_param("delivery_id", "a delivery id (dlv_...)")

_WEBHOOK_ANSWERS = {
    "202": _json(
        "queued once Redis holds every delivery, or nothing to queue (`no_callback`)",
        _ref("Accepted"),
    ),
    **_errors("400", "401", "413", "415", "422", "503"),
}


def _webhook(summary: str, description: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "tags": ["webhooks"],
        "summary": summary,
        "description": description,
        "security": _INBOUND_SECURITY,
        "requestBody": {"required": True, "content": body},
        "responses": _WEBHOOK_ANSWERS,
    }


def _read(summary: str, params: list[Schema], result: str) -> dict[str, Any]:
    return {
        "tags": ["api"],
        "summary": summary,
        "parameters": params,
        "responses": {"200": _json(result), **_errors("400", "404", "422", "503")},
    }


def _act(summary: str, params: list[Schema], body: str) -> dict[str, Any]:
    return {
        "tags": ["api"],
        "summary": summary,
        "parameters": params,
        "security": _ADMIN_SECURITY,
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref(body)}}},
        "responses": {
            "200": _json("done; the body says what changed"),
            **_errors("400", "401", "403", "404", "409", "415", "422", "503"),
        },
    }


def _page(summary: str, params: list[Schema] | None = None) -> dict[str, Any]:
    return {
        "tags": ["dashboard"],
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": _html("the page"), **_page_errors("400", "404", "422", "503")},
    }


def _form(summary: str, params: list[Schema], fields: dict[str, Schema]) -> dict[str, Any]:
    return {
        "tags": ["dashboard"],
        "summary": summary,
        "parameters": params,
        "security": _SESSION_SECURITY,
        "requestBody": {
            "required": True,
            "content": {FORM: {"schema": {"type": "object", "properties": fields}}},
        },
        "responses": {
            "303": _SEE_OTHER,
            **_page_errors("400", "401", "403", "404", "409", "422"),
        },
    }


_CSRF = {"csrf": {"type": "string", "description": "the page's CSRF token"}}

_PATHS: dict[str, dict[str, Any]] = {
    "/webhooks/datadog": {
        "post": _webhook(
            "A Datadog Webhooks integration notification",
            "Datadog's default payload, the recommended custom payload in the README, or a "
            "team's own template (nested alert/event/org objects, camelCase keys); values "
            "arrive as strings. The callback lines are read from the message (`body`).",
            {
                JSON: {"schema": _ref("DatadogPayload")},
                FORM: {"schema": _ref("DatadogPayload")},
            },
        )
    },
    "/webhooks/sns": {
        "post": {
            **_webhook(
                "An Amazon SNS HTTP(S) subscription message",
                "Notification, SubscriptionConfirmation or UnsubscribeConfirmation, signature "
                "version 1 or 2, verified against the certificate at SigningCertURL (only "
                "https://sns.<region>.amazonaws.com/...pem) before anything it says is acted "
                "on. SNS sends it as text/plain; the router reads the body whatever its type.",
                {
                    JSON: {"schema": _ref("SnsMessage")},
                    "text/plain": {"schema": {"type": "string"}},
                },
            ),
            "parameters": [
                {
                    "name": "x-amz-sns-message-type",
                    "in": "header",
                    "required": False,
                    "description": "must agree with the body's Type when present",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                **_WEBHOOK_ANSWERS,
                "200": _json("a subscription confirmed, or an unsubscription acknowledged"),
                **_errors("403"),
            },
        }
    },
    "/webhooks/alertmanager": {
        method: _webhook(
            "A Prometheus Alertmanager (version 4) or Grafana alerting webhook",
            "Each alert is one group (its labels its tags); the callback comes from its "
            "`circuit_breaker_callback` annotation or a keyword line. Grafana may send PUT.",
            {JSON: {"schema": _ref("AlertmanagerPayload")}},
        )
        for method in ("post", "put")
    },
    "/healthz": {
        "get": {
            "tags": ["operations"],
            "summary": "Liveness: the process answers",
            "responses": {"200": _json("alive", _ref("Health"))},
        }
    },
    "/readyz": {
        "get": {
            "tags": ["operations"],
            "summary": "Readiness: Redis answers (Datadog and the reconciler are reported)",
            "responses": {"200": _json("ready"), "503": _json("Redis unreachable")},
        }
    },
    "/metrics": {
        "get": {
            "tags": ["operations"],
            "summary": "Prometheus text format, for the whole cluster",
            "responses": {
                "200": {
                    "description": "the metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "tags": ["operations"],
            "summary": "This description",
            "responses": {"200": _json("the OpenAPI document")},
        }
    },
    "/api/health": {"get": _read("Workers, queue, Datadog API, reconciler", [], "health")},
    "/api/breakers": {
        "get": _read("Breakers", [*_FILTERS, _LIMIT], "`{breakers: [...]}`"),
    },
    "/api/breakers/{name}": {
        "get": _read("One breaker with its history", [_NAME, _KEY], "the breaker"),
    },
    "/api/breakers/{name}/force-open": {"post": _act("Force open", [_NAME], "Override")},
    "/api/breakers/{name}/force-close": {"post": _act("Force closed", [_NAME], "Override")},
    "/api/breakers/{name}/clear": {"post": _act("Clear an override", [_NAME], "Clear")},
    "/api/deliveries": {
        "get": _read("Recent deliveries", [*_FILTERS, _STATUS, _LIMIT], "`{deliveries: [...]}`"),
    },
    "/api/deliveries/{delivery_id}": {
        "get": _read("One delivery with every attempt", [_DELIVERY_ID], "the delivery"),
    },
    "/api/dead-letters": {
        "get": _read("Dead letters", [*_FILTERS, _LIMIT], "`{dead_letters: [...]}`"),
    },
    "/api/dead-letters/{delivery_id}/replay": {
        "post": _act("Queue a dead letter again", [_DELIVERY_ID], "Replay"),
    },
    "/api/dead-letters/{delivery_id}/purge": {
        "post": _act("Delete a dead letter for good", [_DELIVERY_ID], "Purge"),
    },
    "/api/monitors": {
        "get": _read("Monitors and what each callback was told", _FILTERS, "`{monitors: []}`")
    },
    "/api/audit": {"get": _read("What people did", [_LIMIT], "`{audit: [...]}`")},
    "/ui": {"get": _page("Overview", _FILTERS)},
    "/ui/": {"get": _page("Overview (the same page)", _FILTERS)},
    "/ui/breakers": {"get": _page("Breakers", _FILTERS)},
    "/ui/breakers/{name}": {"get": _page("One breaker and its timeline", [_NAME, _KEY])},
    "/ui/deliveries": {"get": _page("Recent deliveries", [*_FILTERS, _STATUS, _LIMIT])},
    "/ui/deliveries/{delivery_id}": {"get": _page("One delivery", [_DELIVERY_ID])},
    "/ui/dead-letters": {"get": _page("Dead letters", [*_FILTERS, _LIMIT])},
    "/ui/dead-letters/{delivery_id}/purge": {
        "get": _page("Confirm a purge", [_DELIVERY_ID]),
        "post": _form(
            "Purge a dead letter",
            [_DELIVERY_ID],
            {**_CSRF, "confirm": {"type": "string", "enum": ["yes"]}},
        ),
    },
    "/ui/dead-letters/{delivery_id}/replay": {
        "post": _form("Replay a dead letter", [_DELIVERY_ID], _CSRF)
    },
    "/ui/monitors": {"get": _page("Monitors", _FILTERS)},
    "/ui/health": {"get": _page("Router health")},
    "/ui/login": {
        "get": _page("Sign in", [_query("next", "the /ui page to return to")]),
        "post": {
            **_form(
                "Sign in with ROUTER_ADMIN_TOKEN and a name",
                [],
                {**_CSRF, **_strings("token", "name", "next")},
            ),
            "security": [],
        },
    },
    "/ui/logout": {"post": _form("Sign out", [], _CSRF)},
    "/ui/breakers/{name}/force": {
        "post": _form(
            "Force a breaker open or closed",
            [_NAME],
            {
                **_CSRF,
                **_strings("key", "reason", "for"),
                "action": {"type": "string", "enum": ["open", "close"]},
            },
        )
    },
    "/ui/breakers/{name}/clear": {
        "post": _form("Clear an override", [_NAME], {**_CSRF, **_strings("key", "reason")})
    },
    "/static/{filename}": {
        "get": {
            "tags": ["dashboard"],
            "summary": "Flask's static files (none are shipped)",
            "parameters": [_path_param("filename", "a file name")],
            "responses": {"200": {"description": "the file"}, **_errors("404")},
        }
    },
    "/ui/static/{filename}": {
        "get": {
            "tags": ["dashboard"],
            "summary": "The dashboard's stylesheet and scripts",
            "parameters": [_path_param("filename", "a file name, e.g. ui.css")],
            "responses": {"200": {"description": "the file"}, **_errors("404")},
        }
    },
}

_SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "Accepted": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["queued", "no_callback"]},
            "deliveries": {"type": "array", "items": {"type": "object"}},
            "problems": {"type": "array", "items": {"type": "string"}},
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Health": {
        "type": "object",
        "properties": {"status": {"type": "string"}, "version": {"type": "string"}},
    },
    "DatadogPayload": {
        "type": "object",
        "description": "The README's recommended payload; other keys are read as aliases "
        "(event_id, monitor_id, alert.transition, event.msg, ...) or ignored.",
        "properties": {
            **_strings(
                "id",
                "alert_id",
                "alert_transition",
                "alert_type",
                "alert_cycle_key",
                "alert_scope",
                "title",
                "body",
                "date",
                "tags",
                "link",
                "org_id",
                "event_type",
            ),
            "alert": {"type": "object"},
            "event": {"type": "object"},
            "org": {"type": "object"},
        },
        "additionalProperties": True,
    },
    "SnsMessage": {
        "type": "object",
        "required": ["Type", "MessageId", "TopicArn", "Timestamp", "SignatureVersion"],
        "properties": {
            "Type": {
                "type": "string",
                "enum": ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"],
            },
            "SignatureVersion": {"type": "string", "enum": ["1", "2"]},
            **_strings(
                "MessageId",
                "TopicArn",
                "Subject",
                "Message",
                "Timestamp",
                "Signature",
                "SigningCertURL",
                "SubscribeURL",
                "Token",
                "UnsubscribeURL",
            ),
        },
    },
    "AlertmanagerPayload": {
        "type": "object",
        "required": ["alerts"],
        "properties": {
            **_strings("version", "groupKey", "status", "receiver", "externalURL"),
            "truncatedAlerts": {"type": "integer"},
            "groupLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "commonLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "commonAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "alerts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": ["firing", "resolved"]},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "annotations": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        **_strings("startsAt", "endsAt", "generatorURL", "fingerprint"),
                    },
                },
            },
        },
    },
    "Override": {
        "type": "object",
        "required": ["reason", "by"],
        "additionalProperties": False,
        "properties": {
            "key": {"type": "string"},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500},
            "by": {"type": "string", "minLength": 1},
            "expires_in": {"type": "string", "description": "e.g. 30m, 2h; none: until cleared"},
        },
    },
    "Clear": {
        "type": "object",
        "required": ["by"],
        "additionalProperties": False,
        "properties": _strings("key", "reason", "by"),
    },
    "Replay": {
        "type": "object",
        "required": ["by"],
        "additionalProperties": False,
        "properties": _strings("by"),
    },
    "Purge": {
        "type": "object",
        "required": ["by", "confirm"],
        "additionalProperties": False,
        "properties": {"by": {"type": "string"}, "confirm": {"const": True}},
    },
}

_SECURITY_SCHEMES = {
    "inboundBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "ROUTER_INBOUND_TOKEN (none needed with ROUTER_INBOUND_AUTH=none)",
    },
    "inboundToken": {"type": "apiKey", "in": "header", "name": "X-Router-Token"},
    "inboundBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "any user name, ROUTER_INBOUND_TOKEN as the password (SNS, Datadog URLs)",
    },
    "adminBearer": {"type": "http", "scheme": "bearer", "description": "ROUTER_ADMIN_TOKEN"},
    "uiSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "router_ui",
        "description": "the session /ui/login signs in, plus the form's csrf field",
    },
}


def openapi_document() -> dict[str, Any]:
    """The whole description, as `GET /openapi.json` serves it."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "breaker-router",
            "version": __version__,
            "description": "Routes monitor notifications to services' circuit-breaker "
            "callbacks. Every refusal is a 4xx JSON `{error, status}` that names the problem; "
            "503 means try again; a sender never gets a 500.",
        },
        "paths": _PATHS,
        "components": {"schemas": _SCHEMAS, "securitySchemes": _SECURITY_SCHEMES},
    }
