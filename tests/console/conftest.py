"""Shared helpers for the console's tests: an operator, a logged-in HTTP client."""

from __future__ import annotations

import re

import httpx

from tikosms.console import auth
from tikosms.db.engine import Database

PASSWORD = "correct horse battery"


async def make_operator(db: Database, name: str = "ops") -> None:
    async with db.begin() as conn:
        await auth.create_operator(conn, name, PASSWORD)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


async def login(client: httpx.AsyncClient, name: str = "ops", password: str = PASSWORD,
                headers: dict[str, str] | None = None) -> httpx.Response:
    form = await client.get("/admin/login")
    return await client.post("/admin/login", data={
        "csrf": csrf_of(form.text), "name": name, "password": password}, headers=headers)
