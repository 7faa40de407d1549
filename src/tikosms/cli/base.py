"""Shared CLI plumbing: the root group, the database option, running coroutines, output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy.exc import DBAPIError, OperationalError

from tikosms.config import get_settings
from tikosms.db.engine import Database
from tikosms.errors import OperatorError

T = TypeVar("T")


class TikoGroup(click.Group):
    """Operator mistakes found anywhere in a command become one line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OperatorError as exc:
            fail(str(exc))


@click.group(cls=TikoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url", envvar="TIKOSMS_DATABASE_URL", default=None, metavar="URL",
    help="sqlite:///./tikosms.db (default) or postgresql://user@host:5432/db "
    "[env: TIKOSMS_DATABASE_URL]",
)
@click.version_option(package_name="tikosms")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """TikoSMS Gateway: SMS API, billing and SMPP carriers."""
    ctx.obj = {"database_url": database_url or get_settings().database_url}


def database_url() -> str:
    ctx = click.get_current_context()
    url: str = ctx.find_root().obj["database_url"]
    return url


def run(coro_fn: Callable[[Database], Awaitable[T]], *, migrate: bool = True) -> T:
    """Run `coro_fn(db)` with the schema brought up to date first; errors become one line."""
    url = database_url()
    try:
        if migrate:
            ensure_schema(url)

        async def go() -> T:
            db = Database(url)
            try:
                return await coro_fn(db)
            finally:
                await db.dispose()

        return asyncio.run(go())
    except OperatorError as exc:
        fail(str(exc))
    except (OperationalError, DBAPIError, OSError) as exc:
        fail(f"cannot use the database at {_safe(url)}: {_first_line(exc)}", code=2)


def ensure_schema(url: str) -> None:
    from tikosms.db.migrate import upgrade

    upgrade(url)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def emit(data: Any, as_json: bool, human: Callable[[Any], str] | str) -> None:
    if as_json:
        click.echo(json.dumps(data, default=_default, indent=2))
    else:
        click.echo(human(data) if callable(human) else human)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output")(fn)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
