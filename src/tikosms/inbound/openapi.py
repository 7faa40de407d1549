"""The OpenAPI description of GET /v1/inbound and /v1/opt-outs (added to the served
document by `tikosms.api.openapi`)."""

from __future__ import annotations

from typing import Any

from tikosms.inbound.optouts import MSG_OPTED_OUT

_TAGS = ["Inbound SMS"]
_INBOUND_EXAMPLE = {
    "inbound_id": "0193a1b2-7c4d-7e5f-8a9b-0c1d2e3f4a5b", "from": "380501234567",
    "to": "4455", "text": "PIZZA margherita, large", "encoding": "gsm7", "parts": 1,
    "keyword": "PIZZA", "opt_out": None, "received_at": "2026-12-02 19:55:01",
}
_OPT_OUT_EXAMPLE = {"to": "380501234567", "from": "4455", "source": "keyword",
                    "keyword": "STOP", "created_at": "2026-12-02 19:56:12"}


def _q(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"in": "query", "name": name, "required": False, "description": description,
            "schema": {"type": "string", **schema}}


def _ok(example: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "example": example}}}}


def _err(description: str, message: str, code: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "example": {"success": False, "error": message, "code": code}}}}}


_PAGE = [
    _q("limit", "Rows per page, 1-1000 (default 100).", type="integer"),
    _q("cursor", "The `next_cursor` of the page before (keyset pagination)."),
]


def add_inbound_paths(spec: dict[str, Any], unauthorized: dict[str, Any]) -> None:
    """Add the inbound and opt-out paths to `spec` (the served document)."""
    spec["paths"]["/v1/inbound"] = {"get": {
        "summary": "Inbound SMS (MO) received on the account's numbers, newest first",
        "operationId": "getV1Inbound", "tags": _TAGS,
        "parameters": [
            _q("since", "Received at or after (`YYYY-MM-DD HH:MM:SS` UTC or ISO 8601)."),
            _q("until", "Received before (same formats)."),
            _q("to", "Only those sent to this number or short code of the account."),
            *_PAGE,
        ],
        "responses": {
            "200": _ok({"success": True, "data": [_INBOUND_EXAMPLE], "next_cursor": None}),
            "401": unauthorized,
            "422": _err("A malformed filter", "The since must be a time such as "
                        "2025-08-12 10:00:00.", "validation_failed"),
        },
    }}
    spec["paths"]["/v1/opt-outs"] = {
        "get": {
            "summary": "The account's opt-outs (recipients sends to whom are refused)",
            "operationId": "getV1OptOuts", "tags": _TAGS,
            "parameters": [_q("from", "Only those of this sender (number of the account)."),
                           *_PAGE],
            "responses": {
                "200": _ok({"success": True, "data": [_OPT_OUT_EXAMPLE], "next_cursor": None}),
                "401": unauthorized,
            },
        },
        "post": {
            "summary": "Add an opt-out (`from` omitted: from every sender of the account)",
            "operationId": "postV1OptOut", "tags": _TAGS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["to"],
                "properties": {"to": {"type": "string", "example": "380501234567"},
                               "from": {"type": "string", "example": "4455"}}}}}},
            "responses": {
                "201": _ok({"success": True, "created": True, "opt_out": {
                    **_OPT_OUT_EXAMPLE, "source": "api", "keyword": None,
                    "created_at": None}}, "Added"),
                "200": _ok({"success": True, "created": False, "opt_out": {
                    **_OPT_OUT_EXAMPLE, "source": "api"}}, "Already there"),
                "401": unauthorized,
                "422": _err("Not a number", "To 'abc' is not a number or short code "
                            "(3-20 digits).", "validation_failed"),
            },
        },
    }
    spec["paths"]["/v1/opt-outs/{number}"] = {"delete": {
        "summary": "Remove a recipient's opt-out(s): sends to it go again",
        "operationId": "deleteV1OptOut", "tags": _TAGS,
        "parameters": [
            {"in": "path", "name": "number", "required": True, "schema": {"type": "string"}},
            _q("from", "Only the opt-out from this sender (default: all of the number's)."),
        ],
        "responses": {
            "200": _ok({"success": True, "removed": 1}),
            "401": unauthorized,
            "404": _err("No opt-out for this number", "No opt-out found for this number.",
                        "not_found"),
        },
    }}
    responses = spec["paths"]["/v1/message"]["post"]["responses"]
    refused = responses.setdefault("422", _err("Invalid request", MSG_OPTED_OUT, "opted_out"))
    refused["description"] = (refused.get("description") or "Invalid request") + (
        f"; a recipient who opted out: code `opted_out`, \"{MSG_OPTED_OUT}\"")
