"""Fixtures of the SMPP server tests: the whole gateway over real TCP.

`gateway` is what a customer meets: the SMPP server (`tikosms.smpp_server`) on a free port, the
delivery worker of `runtime.delivery` with the SMSC simulator as its carrier (over SMPP, as a
real carrier), an account with a balance and the price list, and an SMPP user for it. The
customer side is the project's own ESME session (`tikosms.smpp.session`, smpp34's codec) or an
independent client (smpplib, smpp.twisted3, node-smpp) in the tests that say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import add_rates, make_customer
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.delivery import carriers_repo
from tikosms.delivery.notify import PartsSignal
from tikosms.delivery.worker import DeliveryWorker
from tikosms.runtime import delivery
from tikosms.smpp.connector import SmppCarrier
from tikosms.smpp.pdu import BindRequest, Status
from tikosms.smpp.session import BindType, DeliverSm, SmppSession
from tikosms.smpp.simulator import SimulatorConfig, SmscSimulator
from tikosms.smpp_server import users
from tikosms.smpp_server.server import ServerConfig, SmppServer

SYSTEM_ID = "acme"
PASSWORD = "s3cret"
FAST_CARRIER = {"reconnect_initial": 0.05, "reconnect_max": 0.5, "throttle_retry_after": 0.2,
                "bind_lost_retry_after": 0.1}


@dataclass
class Gateway:
    db: Database
    settings: Settings
    sim: SmscSimulator
    server: SmppServer
    worker: DeliveryWorker
    account_id: int
    token: str

    @property
    def port(self) -> int:
        return self.server.port


@asynccontextmanager
async def running_gateway(settings: Settings, db: Database, *, balance: str = "1000",
                          sim_config: dict[str, Any] | None = None,
                          server_config: dict[str, Any] | None = None,
                          user: dict[str, Any] | None = None) -> AsyncIterator[Gateway]:
    await add_rates(db)
    customer = await make_customer(db, balance=balance)
    async with db.begin() as conn:
        await users.create_user(conn, customer.account_id, SYSTEM_ID, PASSWORD,
                                **(user or {}))
    sim = SmscSimulator(SimulatorConfig(port=0, system_id="tiko", password="pw1", seed=3,
                                        record_submits=True, **(sim_config or {})))
    await sim.start()
    try:
        async with db.begin() as conn:
            await carriers_repo.add_carrier(conn, name="sim", host="127.0.0.1", port=sim.port,
                                            system_id="tiko", password="pw1",
                                            settings={**FAST_CARRIER, "window": 100})
            await carriers_repo.add_route(conn, match="*", carrier="sim", priority=1)
        async with delivery(db, settings) as worker:
            carrier = worker.router.carriers["sim"]
            assert isinstance(carrier, SmppCarrier)
            async with asyncio.timeout(10):
                await carrier.wait_bound()
            config = ServerConfig(port=0, outbox_poll_seconds=0.05, retry_initial_seconds=0.1,
                                  retry_max_seconds=0.5, credentials_check_seconds=0.2,
                                  **(server_config or {}))
            signal = PartsSignal(db)
            signal.local = worker.wake
            server = SmppServer(db, config, signal)
            await server.start()
            try:
                yield Gateway(db, settings, sim, server, worker, customer.account_id,
                              customer.token)
            finally:
                await server.stop()
    finally:
        await sim.stop()


@dataclass
class BareServer:
    """The SMPP server alone: no worker, so parts wait in the queue."""

    db: Database
    server: SmppServer
    account_id: int

    @property
    def port(self) -> int:
        return self.server.port


@asynccontextmanager
async def bare_server(db: Database, *, balance: str = "100",
                      user: dict[str, Any] | None = None,
                      **config: Any) -> AsyncIterator[BareServer]:
    await add_rates(db)
    who = await make_customer(db, balance=balance)
    async with db.begin() as conn:
        await users.create_user(conn, who.account_id, SYSTEM_ID, PASSWORD, **(user or {}))
    server = SmppServer(db, ServerConfig(**{"port": 0, "outbox_poll_seconds": 0.05,
                                            "credentials_check_seconds": 0.2, **config}))
    await server.start()
    try:
        yield BareServer(db, server, who.account_id)
    finally:
        await server.stop()


@pytest.fixture
async def bare(db: Database) -> AsyncIterator[BareServer]:
    async with bare_server(db) as b:
        yield b


@pytest.fixture
async def gateway(settings: Settings, db: Database) -> AsyncIterator[Gateway]:
    async with running_gateway(settings, db) as gw:
        yield gw


@dataclass
class Inbox:
    """What a customer's bind received as deliver_sm; answers each with `status`."""

    items: list[DeliverSm] = field(default_factory=list)
    status: int = Status.ESME_ROK
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, pdu: DeliverSm) -> int:
        if self.status == Status.ESME_ROK:
            self.items.append(pdu)
        self._changed.set()
        self._changed = asyncio.Event()
        return self.status

    async def wait_for(self, count: int, guard: float = 30.0) -> None:
        async with asyncio.timeout(guard):  # a guard against a hang, far above the time taken
            while len(self.items) < count:
                await self._changed.wait()

    def texts(self) -> list[str]:
        return [i.short_message.decode("latin-1") for i in self.items]


@asynccontextmanager
async def customer(port: int, bind_type: BindType = "transceiver", *, window: int = 10,
                   system_id: str = SYSTEM_ID, password: str = PASSWORD,
                   on_deliver: Callable[[DeliverSm], Awaitable[int]] | None = None,
                   ) -> AsyncIterator[SmppSession]:
    """A bound ESME session (the project's own client) to the gateway's SMPP server."""
    session = SmppSession("127.0.0.1", port, BindRequest(system_id, password), bind_type,
                          window=window, on_deliver=on_deliver, enquire_link_interval=0,
                          response_timeout=10.0, label="customer")
    await session.open()
    try:
        yield session
    finally:
        await session.unbind(drain_timeout=1.0)
