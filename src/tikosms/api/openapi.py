"""The served OpenAPI document: the published spec, plus our compatible additions.

Served as the published document (paths, fields, examples unchanged) so that a client generated
from /openapi.json matches one written against the published spec. Changes made here:
- `scheduled_at` had `type: date`, which is not an OpenAPI type: it is `string` (format noted);
- additions of SPEC_NOTES: the cancel endpoint, the Idempotency-Key header, the 401/402/413/429/503
  answers and the error `code` field.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib.resources import files
from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean", "example": False},
        "error": {"type": "string"},
        "code": {"type": "string", "example": "validation_failed"},
    },
}
UNAUTHORIZED = {
    "description": "Missing, unknown or revoked token",
    "content": {"application/json": {"schema": {
        "type": "object", "example": {"error": "User not authenticated"},
        "properties": {"error": {"type": "string", "example": "User not authenticated"}},
    }}},
}


def _error(description: str, example: str, code: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {
            **ERROR_SCHEMA, "example": {"success": False, "error": example, "code": code},
        }}},
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(
        files("tikosms.api").joinpath("published-openapi.json").read_text()
    )
    spec = copy.deepcopy(spec)
    spec["info"]["description"] = (
        "The TikoSMS API as published, served by TikoSMS Gateway, with compatible additions: "
        "Idempotency-Key on sends, POST /v1/campaigns/{id}/cancel, a machine `code` on errors, "
        "`page`/`per_page` on lists, delivery callbacks signed the Standard Webhooks way."
    )
    props = spec["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]
    props["scheduled_at"]["type"] = "string"
    props["scheduled_at"]["description"] += " `YYYY-MM-DD HH:MM:SS` (UTC) or ISO 8601."
    idem = {
        "in": "header", "name": "Idempotency-Key", "required": False,
        "description": "Replays the first answer for 24 h instead of sending again.",
        "schema": {"type": "string", "maxLength": 255},
    }
    for path in ("/v1/message", "/v1/messages"):
        op = spec["paths"][path]["post"]
        op["parameters"] = [*op.get("parameters", []), idem]
        op["responses"].setdefault("402", _error(
            "Cost larger than balance + credit limit", "Insufficient balance",
            "insufficient_balance"))
        op["responses"].setdefault("413", _error(
            "Body over the size limit", "The request body is too large.", "payload_too_large"))
    page_params = [
        {"in": "query", "name": "page", "required": False, "schema": {"type": "integer",
                                                                        "minimum": 1}},
        {"in": "query", "name": "per_page", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    ]
    for path in ("/v1/get_messages", "/v1/get_message"):
        op = spec["paths"][path]["get"]
        op["parameters"] = [*op.get("parameters", []), *page_params]
    for methods in spec["paths"].values():
        for op in methods.values():
            op["responses"].setdefault("401", UNAUTHORIZED)
            op["responses"].setdefault("429", _error(
                "Too many requests (Retry-After says when to retry)",
                "Too many requests: at most 50 per second. Retry after 1 s.", "rate_limited"))
    spec["paths"]["/v1/campaigns/{campaign_id}/cancel"] = {"post": {
        "summary": "Cancel the parts of a campaign not yet sent; they are refunded",
        "operationId": "postV1CampaignCancel",
        "tags": ["SMS API"],
        "parameters": [{"in": "path", "name": "campaign_id", "required": True,
                        "schema": {"type": "string", "format": "uuid"}}],
        "responses": {
            "200": {"description": "", "content": {"application/json": {"schema": {
                "type": "object",
                "example": {"success": True,
                            "campaign_id": "bc7f100a-bebb-4449-8f5a-cf5154ef2fcf",
                            "cancelled": 3, "refunded": "0.150", "status": "canceled"},
                "properties": {
                    "success": {"type": "boolean"}, "campaign_id": {"type": "string"},
                    "cancelled": {"type": "integer"}, "refunded": {"type": "string"},
                    "status": {"type": "string"},
                }}}}},
            "401": UNAUTHORIZED,
            "404": _error("Unknown campaign, or another account's", "Campaign not found",
                          "not_found"),
        },
    }}
    from tikosms.inbound.openapi import add_inbound_paths

    add_inbound_paths(spec, UNAUTHORIZED)  # GET /v1/inbound, /v1/opt-outs
    return spec
