"""The console in a real browser: Debian's Chromium driven by Playwright against a real
`tikosms serve` (SQLite, the simulated carrier) on a free port. One browser and one gateway for
the module; each test logs in with a page of its own. Screenshots for docs/dashboard.md are
written to docs/img/ when TIKOSMS_SCREENSHOTS=1.

SQLite only: these tests drive the pages, whose queries the HTTP tests run on both databases.
The carrier test has a gateway of its own, with a `tikosms smsc-sim` to add as a carrier.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from bench import procs
from tests.faults.smsc_proc import Simulator, smsc_sim
from tikosms.db.engine import Database
from tikosms.db.types import utcnow
from tikosms.inbound import manage
from tikosms.inbound.service import store_inbound
from tikosms.smpp.pdu import HEADER_SIZE, BindRequest, Command, encode_pdu, parse_header

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian chromium is not installed (apt-get install -y chromium; .ci/run does it)",
)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

# RESEARCH.md "browser tests": no sandbox as root, no GPU, nothing of Chromium's own traffic
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery"
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
TIMEOUT_MS = 20_000


class Gateway:
    def __init__(self, base: str, db: procs.ScratchDb, workdir: Path,
                 account: procs.BenchAccount, smpp_port: int = 0) -> None:
        self.base, self.db, self.workdir, self.account = base, db, workdir, account
        self.smpp_port = smpp_port  # serve's SMPP server for customers

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.account.headers, timeout=10)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    workdir = procs.new_workdir()
    with procs.scratch_database("sqlite", workdir) as db:
        procs.tikosms(["operators", "create", "ops", "--password", PASSWORD], db, workdir)
        account = procs.create_account(db, workdir)
        port, smpp_port = procs.free_port(), procs.free_port()
        env = procs.gateway_env(db, port, sim_receipt_delay_ms=300, console_rollup_seconds=1,
                                idle_poll_seconds=0.05, smpp_port=smpp_port)
        with procs.Process([procs.TIKOSMS, "serve"], workdir / "serve.log", env, port=port):
            yield Gateway(f"http://{procs.HOST}:{port}", db, workdir, account, smpp_port)


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: sync_api.Browser, gateway: Gateway) -> Iterator[sync_api.Page]:
    with logged_in(browser, gateway.base) as p:
        yield p


@contextmanager
def logged_in(browser: sync_api.Browser, base: str) -> Iterator[sync_api.Page]:
    context = browser.new_context(base_url=base, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    p.goto("/admin/login")
    p.fill("input[name=name]", "ops")
    p.fill("input[name=password]", PASSWORD)
    p.click("button:has-text('Log in')")
    p.wait_for_url("**/admin")
    try:
        yield p
    finally:
        context.close()


def shoot(page: sync_api.Page, name: str) -> None:
    if os.environ.get("TIKOSMS_SCREENSHOTS") == "1":
        IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMG / name), full_page=True)


def test_campaign_progress_is_watched_to_completion(page: sync_api.Page,
                                                     gateway: Gateway) -> None:
    with gateway.api() as api:
        answer = api.post("/v1/messages", json={
            "from": "Shop", "message": "Winter sale: 20% off today",
            "recipients": procs.recipients(30)})
    assert answer.status_code == 200, answer.text
    campaign_id = answer.json()["campaign_id"]
    page.goto("/admin/campaigns")
    row = page.locator(f"tr[data-campaign='{campaign_id}']")
    # the rows are polled by htmx every 2 s: the status turns without a reload
    sync_api.expect(row.locator("td.status")).to_have_text("completed", timeout=TIMEOUT_MS)
    sync_api.expect(row.locator(".progress-text")).to_have_text("30/30")
    shoot(page, "campaigns.png")
    # the roll-up (every second here, a few seconds behind) counts the campaign's parts
    carriers = page.locator("table").filter(has_text="median to deliver").first
    for _ in range(40):
        page.goto("/admin")
        if "simulated" in carriers.inner_text():
            break
        page.wait_for_timeout(500)
    sync_api.expect(carriers).to_contain_text("simulated")
    page.wait_for_selector("#chart-hour[data-drawn='1']")
    shoot(page, "overview.png")


def test_message_found_by_client_ref_shows_its_history(page: sync_api.Page,
                                                        gateway: Gateway) -> None:
    with gateway.api() as api:
        answer = api.post("/v1/message", json={
            "from": "Shop", "message": "Your code is 1234", "to": procs.recipients(1, 500)[0],
            "client_ref": "order-4711"})
    assert answer.status_code == 200, answer.text
    page.goto("/admin/messages")
    page.fill("input[name=q]", "order-4711")
    page.click("button:has-text('Search')")
    page.click("table a")
    # the receipt comes 0.3 s after the submit: reload until the status is final
    for _ in range(40):
        if "DELIVRD" in page.locator("#part-status").inner_text():
            break
        page.wait_for_timeout(250)
        page.reload()
    sync_api.expect(page.locator("#part-status")).to_contain_text("DELIVRD")
    sync_api.expect(page.locator("table.history")).to_contain_text("submitted")
    sync_api.expect(page.locator("table.history")).to_contain_text("receipt DELIVRD")
    shoot(page, "message.png")


def test_top_up_changes_the_balance(page: sync_api.Page, gateway: Gateway) -> None:
    page.goto(f"/admin/accounts/{gateway.account.account_id}")
    before = float(page.locator("#balance").inner_text().split()[0])
    page.fill("input[name=amount]", "25")
    page.click("button:has-text('Top up')")
    sync_api.expect(page.locator(".flash.ok")).to_contain_text("Balance is now")
    after = float(page.locator("#balance").inner_text().split()[0])
    assert after - before == pytest.approx(25)


def test_revoked_token_no_longer_sends(page: sync_api.Page, gateway: Gateway) -> None:
    page.goto(f"/admin/accounts/{gateway.account.account_id}")
    page.click("button:has-text('Create token')")
    token = page.locator("#new-token").inner_text()
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{gateway.base}/v1/balance", headers=headers).status_code == 200
    page.click("text=Back to the account")
    row = page.locator("tr[data-token]").first  # newest first
    row.locator("button:has-text('Revoke')").click()
    sync_api.expect(page.locator(".flash.ok")).to_contain_text("revoked")
    assert httpx.get(f"{gateway.base}/v1/balance", headers=headers).status_code == 401


def smpp_bind(port: int, system_id: str, password: str) -> int:
    """A bind_transceiver to the gateway's SMPP server: its command_status (0: bound)."""
    with socket.create_connection((procs.HOST, port), timeout=10) as sock:
        sock.sendall(encode_pdu(Command.BIND_TRANSCEIVER, 1,
                                BindRequest(system_id, password).encode_body()))
        data = b""
        while len(data) < HEADER_SIZE:
            chunk = sock.recv(HEADER_SIZE - len(data))
            assert chunk, "the SMPP server closed the connection without an answer"
            data += chunk
        header = parse_header(data)
        assert header.command_id == Command.BIND_TRANSCEIVER_RESP
        return header.command_status


async def _store_mo(url: str, account_id: int) -> None:
    db = Database(url)
    try:
        async with db.begin() as conn:
            await manage.assign_number(conn, account_id, "4711", None)
            await store_inbound(conn, "380671234567", "4711", "Hello from a handset", "gsm7",
                                0, 1, "simulated", utcnow())
            await store_inbound(conn, "380679876543", "4711", "STOP", "gsm7", 0, 1, "simulated",
                                utcnow())
    finally:
        await db.dispose()


def test_smpp_user_made_on_the_account_page_binds_until_revoked(page: sync_api.Page,
                                                                 gateway: Gateway) -> None:
    page.goto(f"/admin/accounts/{gateway.account.account_id}")
    form = page.locator("#add-smpp-user")
    for field, value in (("system_id", "webesme"), ("password", "pw4711"), ("max_binds", "2"),
                         ("tps", "20"), ("allow_ip", "127.0.0.0/8")):
        form.locator(f"input[name={field}]").fill(value)
    form.locator("button").click()
    sync_api.expect(page.locator(".flash.ok")).to_contain_text("SMPP user webesme created")
    row = page.locator("tr[data-smpp-user='webesme']")
    sync_api.expect(row).to_contain_text("127.0.0.0/8")
    listed = json.loads(procs.tikosms(["smpp-users", "list", "--json"], gateway.db,
                                      gateway.workdir))
    assert [(u["system_id"], u["max_binds"], u["tps"]) for u in listed] == [
        ("webesme", 2, 20.0)]
    assert smpp_bind(gateway.smpp_port, "webesme", "pw4711") == 0
    assert smpp_bind(gateway.smpp_port, "webesme", "wrong") != 0
    page.on("dialog", lambda dialog: dialog.accept())
    row.locator("button:has-text('Revoke')").click()
    sync_api.expect(page.locator(".flash.ok")).to_contain_text("SMPP user webesme revoked")
    assert smpp_bind(gateway.smpp_port, "webesme", "pw4711") != 0
    assert json.loads(procs.tikosms(["smpp-users", "list", "--json"], gateway.db,
                                    gateway.workdir)) == []


def test_inbound_message_is_on_the_inbound_page(page: sync_api.Page, gateway: Gateway) -> None:
    # through the inbound service, in a thread of its own (Playwright's loop runs in this one)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _store_mo(gateway.db.url, gateway.account.account_id)).result()
    page.goto("/admin")
    page.click("nav a:has-text('Inbound')")
    row = page.locator("tr[data-inbound]").filter(has_text="Hello from a handset")
    sync_api.expect(row).to_contain_text("380671234567")
    sync_api.expect(row).to_contain_text("4711")
    stop = page.locator("tr[data-inbound]").filter(has_text="380679876543")
    sync_api.expect(stop.locator("td.opt-out")).to_have_text("stop")
    sync_api.expect(page.locator("tr[data-opt-out]").filter(has_text="380679876543")
                    ).to_contain_text("keyword")
    shoot(page, "inbound.png")
    page.fill("#inbound-filter input[name=number]", "+380 67 123 4567")
    page.click("#inbound-filter button")
    sync_api.expect(page.locator("tr[data-inbound]")).to_have_count(1)


@pytest.fixture
def smsc_gateway(tmp_path: Path) -> Iterator[tuple[Gateway, Simulator]]:
    """A `tikosms serve` on the built-in simulated carrier (no carrier stored yet), and a
    `tikosms smsc-sim` it does not know about."""
    workdir = procs.new_workdir()
    with procs.scratch_database("sqlite", workdir) as db, smsc_sim(tmp_path) as sim:
        procs.tikosms(["operators", "create", "ops", "--password", PASSWORD], db, workdir)
        account = procs.create_account(db, workdir)
        port = procs.free_port()
        # the defaults' carriers reload (2 s); heartbeats every second, not 5
        env = procs.gateway_env(db, port, idle_poll_seconds=0.05, worker_heartbeat_seconds=1)
        with procs.Process([procs.TIKOSMS, "serve"], workdir / "serve.log", env, port=port):
            yield Gateway(f"http://{procs.HOST}:{port}", db, workdir, account), sim


def test_added_carrier_is_used_by_the_running_worker(browser: sync_api.Browser,
                                                     smsc_gateway: tuple[Gateway, Simulator]
                                                     ) -> None:
    gateway, sim = smsc_gateway
    with logged_in(browser, gateway.base) as page:
        page.goto("/admin/carriers")
        form = page.locator("#add-carrier")
        for field, value in (("name", "acme-ua"), ("host", "127.0.0.1"), ("port", str(sim.port)),
                             ("system_id", "tiko"), ("password", "secret"), ("tps", "50"),
                             ("window", "20"), ("match", "255")):
            form.locator(f"input[name={field}]").fill(value)
        form.locator("button").click()
        sync_api.expect(page.locator(".flash.ok")).to_contain_text("Carrier acme-ua added")
        row = page.locator("tr[data-carrier='acme-ua']")
        sync_api.expect(row).to_contain_text(f"127.0.0.1:{sim.port}")
        listed = json.loads(procs.tikosms(["carriers", "list", "--json"], gateway.db,
                                          gateway.workdir))
        assert [c["name"] for c in listed] == ["acme-ua"]
        # the running worker loads it and binds (its heartbeat tells this page): no restart
        for _ in range(80):
            if "bound" in row.locator("td.binds").inner_text():
                break
            page.wait_for_timeout(250)
            page.reload()
        sync_api.expect(row.locator("td.binds")).to_contain_text("bound")
        shoot(page, "carriers.png")
        with gateway.api() as api:
            answer = api.post("/v1/message", json={
                "from": "Shop", "message": "Your code is 5678", "to": procs.recipients(1, 900)[0]})
        assert answer.status_code == 200, answer.text
        delivered = "SELECT count(*) FROM parts WHERE carrier = 'acme-ua' AND status = 'DELIVRD'"
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while time.monotonic() < deadline and not procs.count(gateway.db, delivered):
            time.sleep(0.1)
        assert procs.count(gateway.db, delivered) == 1
        page.goto("/admin")
        sync_api.expect(page.locator("tr[data-bind='acme-ua']").first).to_contain_text("bound")
    counters = sim.counters()  # the simulator received it (and gave its receipt)
    assert counters["accepted"] == 1 and counters["receipts_acked"] == 1


def test_docs_render_with_no_request_off_this_host(browser: sync_api.Browser,
                                                   gateway: Gateway) -> None:
    context = browser.new_context(base_url=gateway.base)
    off_host: list[str] = []

    def only_local(route: sync_api.Route) -> None:
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            off_host.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    p = context.new_page()
    p.goto("/docs")
    sync_api.expect(p.locator(".swagger-ui .info .title")).to_contain_text("TikoSMS",
                                                                        timeout=TIMEOUT_MS)
    sync_api.expect(p.locator(".opblock").first).to_be_visible()
    assert off_host == []
    context.close()
