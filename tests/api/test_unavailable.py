"""A database that cannot be reached is a 503 in the envelope, never a 500 or a stack trace."""

from __future__ import annotations

import httpx
import pytest
from bench.procs import free_port

from tikosms.app import create_app
from tikosms.config import Settings
from tikosms.db.engine import Database


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/balance"), ("POST", "/v1/message")])
async def test_unreachable_database_is_503_with_retry_after(method: str, path: str) -> None:
    """Also for POST /v1/message, which is served ahead of FastAPI's routing."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # nothing listens
    db = Database(url)
    app = create_app(Settings(database_url=url), db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.request(method, path, headers={"Authorization": "Bearer tk_x"},
                                 json={"from": "Shop", "to": "380501234567", "message": "hi"})
    await db.dispose()
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.json()["success"] is False and r.json()["code"] == "service_unavailable"
