"""The console's workers and binds come from the heartbeats of every worker process (both
databases): the same on any process, none of which needs a worker of its own."""

from __future__ import annotations

import httpx

from tests.console.conftest import login, make_operator
from tests.observability.test_heartbeats import BOUND, REFUSED, add_carrier, beat, write
from tikosms.config import Settings
from tikosms.db.engine import Database


async def test_overview_shows_each_worker_and_the_binds_of_the_fresh_ones(
        client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    stale = settings.worker_heartbeat_seconds * settings.worker_heartbeat_missed
    await write(db, beat("gw-1:101:aaaaaa", acme=BOUND),
                beat("gw-2:202:bbbbbb", ago=stale + 10, acme=REFUSED))
    await make_operator(db)
    await login(client)
    page = (await client.get("/admin")).text
    assert 'data-worker="gw-1:101:aaaaaa" class="fresh"' in page
    assert 'data-worker="gw-2:202:bbbbbb" class="stale"' in page and "(stale)" in page
    binds = page.split('<table class="binds">', 1)[1].split("</table>", 1)[0]
    assert binds.count('<tr data-bind="acme">') == 1  # the stale worker's bind is not shown
    assert "state-bound" in binds and "3 / 10" in binds


async def test_carriers_page_shows_a_refused_bind_and_a_carrier_no_worker_holds(
        client: httpx.AsyncClient, db: Database) -> None:
    await add_carrier(db, "acme")
    await add_carrier(db, "spare")
    await write(db, beat("gw-1:101:aaaaaa", acme=REFUSED))
    await make_operator(db)
    await login(client)
    page = (await client.get("/admin/carriers")).text
    acme = page.split('data-carrier="acme"', 1)[1].split("</tr>", 1)[0]
    spare = page.split('data-carrier="spare"', 1)[1].split("</tr>", 1)[0]
    assert 'class="state-refused"' in acme and "ESME_RINVPASWD" in acme
    assert "no fresh worker holds it" in spare
    assert 'data-worker="gw-1:101:aaaaaa"' in page


async def test_no_worker_heartbeat_is_said_plainly(client: httpx.AsyncClient,
                                                   db: Database) -> None:
    await make_operator(db)
    await login(client)
    page = (await client.get("/admin")).text
    assert 'id="binds-none"' in page and "no worker heartbeat" in page
