from __future__ import annotations

from tests.smpp_server.conftest import Gateway, Inbox, customer
from tikosms.smpp.submit import SubmitFields


async def test_smoke(gateway: Gateway) -> None:
    inbox = Inbox()
    async with customer(gateway.port, on_deliver=inbox) as s:
        r = await s.submit(SubmitFields("380501234567", "Acme", b"Hello", source_addr_ton=5))
        print(r)
        assert r.command_status == 0
        await inbox.wait_for(1)
        print(inbox.texts(), inbox.items[0].tlvs)
