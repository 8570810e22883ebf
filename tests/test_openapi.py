"""`GET /openapi.json` describes every route the app serves, and only those."""

from __future__ import annotations

import re

import schemathesis

# Flask's `<name>` and `<path:name>` are OpenAPI's `{name}`.
_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
_IMPLICIT = {"HEAD", "OPTIONS"}


def _served(app) -> set[tuple[str, str]]:
    return {
        (method.lower(), _CONVERTER.sub(r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - _IMPLICIT
    }


def _described(document) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def test_every_route_is_described_and_nothing_else(app, client):
    document = client.get("/openapi.json").get_json()
    served, described = _served(app), _described(document)
    assert served - described == set(), "served but not described in router/openapi.py"
    assert described - served == set(), "described in router/openapi.py but not served"


def test_the_document_is_valid_openapi_that_schemathesis_loads(app, client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    schema = schemathesis.openapi.from_dict(response.get_json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(_served(app))


def test_each_path_parameter_is_declared(client):
    document = client.get("/openapi.json").get_json()
    for path, item in document["paths"].items():
        named = set(re.findall(r"{([a-z_]+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == named, f"{method.upper()} {path}"


def test_webhooks_name_the_inbound_credentials_and_actions_the_admin_token(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    inbound = [{"inboundBearer": []}, {"inboundToken": []}, {"inboundBasic": []}]
    for path in ("/webhooks/datadog", "/webhooks/sns"):
        assert paths[path]["post"]["security"] == inbound
    assert paths["/webhooks/alertmanager"]["put"]["security"] == inbound
    assert paths["/api/breakers/{name}/force-open"]["post"]["security"] == [{"adminBearer": []}]
    assert "security" not in paths["/api/breakers"]["get"]  # reads need nothing
