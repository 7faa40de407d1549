"""The callback outbox: each status change of a part with a callback URL becomes one row.

Written in the same transaction as the status change itself, so a change is never lost and never
announced without having happened. The dispatcher (`tikosms.callbacks.dispatcher`) sends them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms import formats
from tikosms.callbacks import repository
from tikosms.db.models import FINAL_STATUSES

EVENT_NAME = "message.status"
# keys of a part's mapping that carry its campaign's sender and callback URL when the caller
# read them with the part (the campaign is then not read again)
CAMPAIGN_SENDER = "campaign_sender"
CAMPAIGN_CALLBACK_URL = "campaign_callback_url"


async def enqueue_status_events(
    conn: AsyncConnection, parts: Iterable[Mapping[str, Any]], occurred_at: datetime
) -> int:
    """Queue a callback for each part (a mapping of its columns after the change).

    A part without its own callback URL uses its campaign's; without either, nothing is queued.
    """
    parts = list(parts)
    if not parts:
        return 0
    if all(CAMPAIGN_SENDER in p for p in parts):  # read with the parts (delivery.transitions)
        campaigns = {p["campaign_id"]: (p[CAMPAIGN_SENDER], p[CAMPAIGN_CALLBACK_URL])
                     for p in parts if p[CAMPAIGN_SENDER] is not None}
    else:
        campaigns = await repository.campaign_senders(
            conn, list({p["campaign_id"] for p in parts}))
    rows = []
    event_ids = _event_ids(len(parts))
    for p, event_id in zip(parts, event_ids, strict=True):
        campaign = campaigns.get(p["campaign_id"])
        url = p.get("callback_url") or (campaign[1] if campaign else None)
        if not url:
            continue
        payload = {
            "event_id": event_id,
            "event": EVENT_NAME,
            "final": p["status"] in FINAL_STATUSES,
            "occurred_at": formats.campaign_time(occurred_at),
            "message_id": p["message_id"],
            "campaign_id": p["campaign_id"],
            "to": p["to"],
            "from": campaign[0] if campaign else None,
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
        rows.append((event_id, p["id"], p["account_id"], url, orjson.dumps(payload).decode()))
    await repository.insert_events(conn, rows, occurred_at)
    return len(rows)


def _event_ids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as text, from one read of the OS's random source (a
    read per id, as `uuid.uuid4` makes, costs more than the rest of the id)."""
    raw = os.urandom(16 * count)
    return [str(uuid.UUID(bytes=raw[i:i + 16], version=4)) for i in range(0, 16 * count, 16)]


INBOUND_EVENT_NAME = "message.inbound"


async def enqueue_inbound_event(conn: AsyncConnection, inbound_id: int, account_id: int,
                                url: str, payload: Mapping[str, Any], occurred_at: datetime
                                ) -> str:
    """Queue the callback of an inbound message (`tikosms.inbound`); its event id.

    It goes through the same outbox, dispatcher, signing, retries and SSRF checks as status
    callbacks. The outbox orders events by `part_id`; an inbound event takes `-inbound_id`
    there (part ids are positive), so each inbound message is a chain of its own."""
    event_id = _event_ids(1)[0]
    body = {"event_id": event_id, "event": INBOUND_EVENT_NAME,
            "occurred_at": formats.campaign_time(occurred_at), **payload}
    await repository.insert_events(
        conn, [(event_id, -inbound_id, account_id, url, orjson.dumps(body).decode())],
        occurred_at)
    return event_id
