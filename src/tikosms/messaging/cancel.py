"""Cancel a campaign: parts not yet with a carrier become CANCELED and are refunded."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import Part
from tikosms.db.types import utcnow
from tikosms.delivery.transitions import finish_waiting
from tikosms.errors import MSG_CAMPAIGN_NOT_FOUND, NotFound
from tikosms.messaging import repository as repo


@dataclass(frozen=True, slots=True)
class CancelResult:
    cancelled: int
    refunded: Decimal
    status: str


async def cancel_campaign(conn: AsyncConnection, account_id: int, campaign_id: str
                          ) -> CancelResult:
    campaign = await repo.get_campaign(conn, account_id, campaign_id)
    if campaign is None:
        raise NotFound(MSG_CAMPAIGN_NOT_FOUND)  # another account's campaign included
    now = utcnow()
    # a part a worker holds right now is mid-submission: it is left to finish
    lease_free = (Part.lease_until.is_(None)) | (Part.lease_until < now)
    rows = await finish_waiting(
        conn,
        (Part.campaign_id == campaign_id) & (Part.account_id == account_id) & lease_free,
        "CANCELED", now, "campaign cancelled",
    )
    refunded = sum((r["cost"] for r in rows), Decimal(0))
    status = "canceled" if rows else campaign.status
    if rows:
        await repo.set_campaign_fields(conn, campaign_id, status=status, updated_at=now)
    return CancelResult(len(rows), refunded, status)
