"""Rows -> the API's JSON shapes (all formatting through tikosms.formats)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from tikosms import formats
from tikosms.db.types import utcnow
from tikosms.messaging.lifecycle import shown_counts, shown_status


def campaign_view(c: Row) -> dict[str, Any]:
    status = shown_status(c.status, c.scheduled_at, utcnow())
    return {
        "campaign_id": c.id,
        "sender": c.sender,
        "message": c.message,
        "recipients": c.recipients,
        "created_at": formats.campaign_time(c.created_at),
        "updated_at": formats.campaign_time(c.updated_at),
        # additions (clients ignore unknown fields)
        "status": status,  # scheduled | active | completed | canceled (messaging.lifecycle)
        "kind": c.kind,
        "total_parts": c.total_parts,
        "duplicates_removed": c.duplicates_removed,
        "invalid_removed": c.invalid_removed,
        "cost": formats.cost(c.cost),
        "scheduled_at": formats.message_time(c.scheduled_at),
        "concurrency": c.concurrency,
        # parts by status, as the worker's roll-up last counted them (null: not yet counted)
        "counts": shown_counts(c.counts, status, c.total_parts),
        "counted_at": _campaign_time(c.counted_at),
        "completed_at": _campaign_time(c.completed_at),  # when every part was final
    }


def _campaign_time(at: Any) -> str | None:
    return None if at is None else formats.campaign_time(at)


def part_view(p: Row) -> dict[str, Any]:
    return {
        "message_id": p.message_id,
        "campaign_id": p.campaign_id,
        "to": p.to,
        "message": p.text,
        "from": p.sender,
        "sender_type": p.sender_type,
        "status": p.status,
        "data_coding": p.data_coding,
        "mccmnc": p.mccmnc,
        "cost": formats.cost(p.cost),
        "part": p.part_no,
        "total_parts": p.total_parts,
        "sent_at": formats.message_time(p.sent_at),
        "delivered_at": formats.message_time(p.delivered_at),
        "client_ref": p.client_ref,
        "callback_url": p.callback_url or p.campaign_callback_url,
        "error_code": p.error_code,
    }
