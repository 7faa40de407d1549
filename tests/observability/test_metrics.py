"""/metrics in one process: requests by route template, and the database's figures."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

from tests.conftest import Customer
from tests.observability.test_processes import sample_sum


def requests_counted(route: str, status: str) -> float:
    return REGISTRY.get_sample_value("tikosms_http_requests_total",
                                     {"method": "GET", "route": route, "status": status}) or 0.0


async def test_requests_are_counted_by_route_template_and_status(
        client: httpx.AsyncClient, customer: Customer) -> None:
    before = requests_counted("/v1/balance", "200"), requests_counted("/v1/balance", "401")
    await client.get("/v1/balance", headers=customer.headers)
    await client.get("/v1/balance?token=nope")
    assert requests_counted("/v1/balance", "200") == before[0] + 1
    assert requests_counted("/v1/balance", "401") == before[1] + 1


async def test_an_unknown_path_is_counted_without_its_path(client: httpx.AsyncClient) -> None:
    before = requests_counted("unmatched", "404")
    await client.get("/v1/380501234567")
    assert requests_counted("unmatched", "404") == before + 1
    assert "380501234567" not in (await client.get("/metrics")).text


async def test_queue_depth_and_parts_by_status_match_the_database(
        client: httpx.AsyncClient, customer: Customer) -> None:
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "TikoSMS", "recipients": ["+380501234567", "+380501234568", "+380501234569"],
        "message": "hello"})
    assert r.status_code == 200, r.text
    text = (await client.get("/metrics")).text  # no worker runs here: the parts wait
    assert sample_sum(text, "tikosms_queue_due_parts") == 3
    assert sample_sum(text, "tikosms_parts", status="QUEUED", carrier="") == 3
    assert sample_sum(text, "tikosms_callbacks", state="pending") == 0


def test_the_grafana_dashboard_asks_only_for_series_the_gateway_exports() -> None:
    import json
    import re
    from pathlib import Path

    import tikosms.observability.database as database
    import tikosms.observability.metrics as metrics

    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "docs/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    asked = {re.sub(r"_(bucket|count|sum)$", "", name)
             for e in exprs for name in re.findall(r"tikosms_\w+", e)}
    exported = Path(metrics.__file__).read_text() + Path(database.__file__).read_text()
    assert asked and all(f'"{name}' in exported for name in asked), asked
