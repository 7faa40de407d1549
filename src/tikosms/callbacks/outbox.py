"""The callback outbox: each status change of a part with a callback URL becomes one row.

Written in the same transaction as the status change itself, so a change is never lost and never
announced without having happened. The dispatcher (`tikosms.callbacks.dispatcher`) sends them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms import formats
from tikosms.db.models import FINAL_STATUSES, CallbackEvent, Campaign

EVENT_NAME = "message.status"


async def enqueue_status_events(
    conn: AsyncConnection, parts: Iterable[Mapping[str, Any]], occurred_at: datetime
) -> int:
    """Queue a callback for each part (a mapping of its columns after the change).

    A part without its own callback URL uses its campaign's; without either, nothing is queued.
    """
    parts = list(parts)
    if not parts:
        return 0
    campaign_ids = {p["campaign_id"] for p in parts}
    campaigns = {
        row.id: row
        for row in await conn.execute(
            select(Campaign.id, Campaign.sender, Campaign.callback_url).where(
                Campaign.id.in_(campaign_ids)
            )
        )
    }
    rows = []
    for p in parts:
        campaign = campaigns.get(p["campaign_id"])
        url = p.get("callback_url") or (campaign.callback_url if campaign else None)
        if not url:
            continue
        event_id = str(uuid.uuid4())
        payload = {
            "event_id": event_id,
            "event": EVENT_NAME,
            "final": p["status"] in FINAL_STATUSES,
            "occurred_at": formats.campaign_time(occurred_at),
            "message_id": p["message_id"],
            "campaign_id": p["campaign_id"],
            "to": p["to"],
            "from": campaign.sender if campaign else None,
            "status": p["status"],
            "part": p["part_no"],
            "total_parts": p["total_parts"],
            "mccmnc": p["mccmnc"],
            "cost": formats.cost(p["cost"]),
            "sent_at": formats.message_time(p.get("sent_at")),
            "delivered_at": formats.message_time(p.get("delivered_at")),
            "client_ref": p.get("client_ref"),
            "error_code": p.get("error_code"),
        }
        rows.append(
            {
                "event_id": event_id,
                "part_id": p["id"],
                "account_id": p["account_id"],
                "url": url,
                "payload": orjson.dumps(payload).decode(),
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": occurred_at,
                "created_at": occurred_at,
            }
        )
    if rows:
        await conn.execute(insert(CallbackEvent), rows)
    return len(rows)
