"""Helpers of the inbound tests: MO deliver_sm as a carrier hands them over, accounts that
own numbers."""

from __future__ import annotations

from tikosms.db.engine import Database
from tikosms.delivery.carrier import InboundPdu
from tikosms.inbound import manage
from tikosms.smpp.mo import build_mo_parts

HANDSET = "380501234567"  # a Ukrainian mobile: the default price list has a rate for it
OTHER_HANDSET = "380507654321"
SHORT_CODE = "4455"
LONG_NUMBER = "380441112233"


def mo_pdus(text: str, *, sender: str = HANDSET, to: str = SHORT_CODE,
            data_coding: int | None = None, concat: str = "udh8", order: str = "in-order",
            part_octets: int | None = None, ref: int = 77) -> list[InboundPdu]:
    """The deliver_sm of an MO, as the connector gives them to `on_inbound`."""
    return [InboundPdu(f"+{sender}", to, p.esm_class, p.data_coding, p.short_message,
                       dict(p.tlvs), "sim")
            for p in build_mo_parts(text, data_coding, concat=concat, order=order,
                                    part_octets=part_octets, ref=ref, seed=5)]


async def assign(db: Database, account_id: int, number: str, keyword: str | None = None
                 ) -> None:
    async with db.begin() as conn:
        await manage.assign_number(conn, account_id, number, keyword)


async def set_inbound_url(db: Database, account_id: int, url: str) -> None:
    async with db.begin() as conn:
        await manage.update_account(conn, account_id, inbound_url=url)
