"""The console's HTTP side: /admin pages (server-rendered Jinja2, htmx for live parts, uPlot
charts from /admin/api/traffic). Handlers translate HTTP only: reads come from `reads`, writes
go through the domain services (accounts, rates, carriers_repo, messaging.cancel) or, where
none existed, the thin `console.services`.

Every page needs an operator session (cookie); an `Authorization` header is refused outright,
so API bearer tokens never open the console. Every POST carries the session's CSRF token (form
field `csrf` or header `X-CSRF-Token`); the login form carries a token of its own, paired with
a short-lived cookie.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tikosms.accounts import repository as accounts_repo
from tikosms.accounts import service as accounts
from tikosms.console import auth, reads, services
from tikosms.db.types import utcnow
from tikosms.delivery import carriers_repo, slots_repo
from tikosms.delivery.heartbeat import stale_after
from tikosms.errors import OperatorError, TikoError
from tikosms.inbound import manage as inbound
from tikosms.inbound import repository as inbound_repo
from tikosms.messaging.cancel import cancel_campaign
from tikosms.rates import service as rates
from tikosms.smpp_server import users as smpp_users

HERE = Path(__file__).parent
SESSION_COOKIE = "tikosms_admin"
LOGIN_COOKIE = "tikosms_admin_login"
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/admin", include_in_schema=False)


class LoginRequired(Exception):
    """Raised by `_session`; answered with a redirect to the login page."""


class CsrfRejected(Exception):
    """A POST without the session's CSRF token: 403, nothing changed."""


# --- plumbing ----------------------------------------------------------------------------------

async def _session(request: Request) -> auth.SessionInfo:
    if request.headers.get("authorization"):
        raise LoginRequired("API tokens do not open the console")
    async with request.app.state.db.connect() as conn:
        info = await auth.session_for(conn, request.cookies.get(SESSION_COOKIE))
    if info is None:
        raise LoginRequired("not logged in")
    return info


async def _form(request: Request, sess: auth.SessionInfo) -> dict[str, str]:
    form = {k: str(v) for k, v in (await request.form()).items()}
    given = form.get("csrf") or request.headers.get("x-csrf-token")
    if not auth.csrf_ok(sess.csrf_token, given):
        raise CsrfRejected()
    return form


def _secure(request: Request) -> bool:
    mode = request.app.state.settings.console_cookie_secure
    if mode in ("always", "never"):
        return bool(mode == "always")
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return proto.split(",")[0].strip() == "https"


def _page(request: Request, name: str, sess: auth.SessionInfo | None, **ctx: Any
          ) -> HTMLResponse:
    ctx.update(sess=sess, msg=request.query_params.get("msg"),
               err=request.query_params.get("err"))
    return templates.TemplateResponse(request, name, ctx)


def _back(path: str, *, msg: str | None = None, err: str | None = None) -> RedirectResponse:
    query = urlencode({k: v for k, v in (("msg", msg), ("err", err)) if v})
    sep = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{sep}{query}" if query else path, status_code=303)


def _int(value: Any, default: int = 0) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


async def _write(request: Request, back: str, action: Any, ok: str) -> RedirectResponse:
    """Run a write in one transaction; a domain error is shown on the page, nothing changed."""
    try:
        async with request.app.state.db.begin() as conn:
            result = await action(conn)
    except (OperatorError, TikoError) as exc:
        return _back(back, err=str(exc) if isinstance(exc, OperatorError) else exc.message)
    return _back(back, msg=ok.format(result=result))


def install(app: Any) -> None:
    from fastapi.staticfiles import StaticFiles

    app.include_router(router)
    app.mount("/admin/static", StaticFiles(directory=str(HERE / "static")),
              name="console-static")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("authorization"):
            return JSONResponse({"success": False, "error": str(exc), "code": "not_operator"},
                                status_code=401)
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/admin/login"})
        return RedirectResponse("/admin/login", status_code=303)

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(_request: Request, _exc: CsrfRejected) -> Response:
        return HTMLResponse("<h1>403</h1><p>The form was out of date or not from this console "
                            "(CSRF token missing or wrong). Reload the page and try again.</p>",
                            status_code=403)


# --- login -------------------------------------------------------------------------------------

@router.get("/login")
async def login_form(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = _page(request, "login.html", None, login_csrf=token)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        secure=_secure(request), path="/admin")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not auth.csrf_ok(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")) \
            or not request.cookies.get(LOGIN_COOKIE):
        raise CsrfRejected()
    settings = request.app.state.settings
    rule = auth.ThrottleRule(settings.console_login_failures_per_user,
                             settings.console_login_failures_per_ip,
                             timedelta(seconds=settings.console_login_window_seconds))
    name, password = form.get("name", "").strip(), form.get("password", "")
    ip = request.client.host if request.client else "unknown"
    db = request.app.state.db
    now = utcnow()
    async with db.connect() as conn:
        until = await auth.throttled_until(conn, name, ip, rule, now)
        row = await auth.get_operator(conn, name) if until is None else None
    if until is not None:
        wait = max(1, int((until - now).total_seconds()))
        return _throttled(request, form, wait)
    ok = await auth.verify_password(row.password_hash if row else None, password)
    async with db.begin() as conn:
        if not ok or row is None:
            await auth.record_failure(conn, name, ip, rule, now)
        else:
            await auth.clear_user_failures(conn, name)
            token = await auth.start_session(conn, row.id, settings.console_session_hours)
    if not ok or row is None:
        failed = _page(request, "login.html", None, login_csrf=form.get("csrf"),
                       error="Wrong name or password.")
        failed.status_code = 401
        return failed
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(settings.console_session_hours * 3600),
                        httponly=True, samesite="lax", secure=_secure(request), path="/admin")
    response.delete_cookie(LOGIN_COOKIE, path="/admin")
    return response


def _throttled(request: Request, form: dict[str, str], wait: int) -> Response:
    response = _page(request, "login.html", None, login_csrf=form.get("csrf"),
                     error=f"Too many failed logins. Try again in {wait // 60 + 1} min.")
    response.status_code = 429
    response.headers["Retry-After"] = str(wait)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    sess = await _session(request)
    await _form(request, sess)
    async with request.app.state.db.begin() as conn:
        await auth.end_session(conn, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


# --- overview ----------------------------------------------------------------------------------

@router.get("")
@router.get("/")
async def overview(request: Request) -> Response:
    sess = await _session(request)
    now = utcnow()
    async with request.app.state.db.connect() as conn:
        day = now - timedelta(days=1)
        ctx: dict[str, Any] = {
            "by_carrier": await reads.delivery_by(conn, "carrier", day),
            "by_network": await reads.delivery_by(conn, "mccmnc", day),
            "queue": await reads.queue_depth(conn),
            "callbacks": await reads.callbacks_failing(conn, day),
        }
        ctx["workers"], ctx["binds"] = await reads.workers_and_binds(
            conn, now, stale_after(request.app.state.settings))
    return _page(request, "overview.html", sess, **ctx)


@router.get("/api/traffic")
async def traffic(request: Request) -> Response:
    await _session(request)
    span = request.query_params.get("range", "hour")
    now = utcnow()
    since, step = (now - timedelta(days=1), 10) if span == "day" else (now - timedelta(hours=1), 1)
    async with request.app.state.db.connect() as conn:
        series = await reads.traffic_series(conn, since, step)
    return JSONResponse({"step_minutes": step, **series})


# --- campaigns ---------------------------------------------------------------------------------

@router.get("/campaigns")
async def campaigns(request: Request) -> Response:
    sess = await _session(request)
    page = _int(request.query_params.get("page"))
    kind = request.query_params.get("kind", "bulk")
    kind = kind if kind in reads.KINDS else "bulk"
    async with request.app.state.db.connect() as conn:
        rows = await reads.campaigns_page(conn, page, kind)
    name = "_campaign_rows.html" if request.headers.get("hx-request") else "campaigns.html"
    return _page(request, name, sess, rows=rows, page=page, kind=kind, size=reads.PAGE)


@router.post("/campaigns/{campaign_id}/cancel")
async def cancel(campaign_id: str, request: Request) -> Response:
    sess = await _session(request)
    await _form(request, sess)
    async with request.app.state.db.connect() as conn:
        c = await reads.campaign(conn, campaign_id)
    if c is None:
        return _back("/admin/campaigns", err="No such campaign.")

    async def go(conn: Any) -> Any:
        result = await cancel_campaign(conn, c["account_id"], campaign_id)
        reads.forget_counts(campaign_id)
        return f"{result.cancelled} part(s) canceled, {result.refunded} refunded"

    return await _write(request, "/admin/campaigns", go, "Campaign canceled: {result}.")


# --- messages ----------------------------------------------------------------------------------

@router.get("/messages")
async def messages(request: Request) -> Response:
    sess = await _session(request)
    q = request.query_params.get("q", "")[:255]
    page = _int(request.query_params.get("page"))
    async with request.app.state.db.connect() as conn:
        rows = await reads.search_parts(conn, q, page)
    return _page(request, "messages.html", sess, q=q, rows=rows, page=page, size=reads.PAGE)


@router.get("/parts/{part_id}")
async def part(part_id: int, request: Request) -> Response:
    sess = await _session(request)
    async with request.app.state.db.connect() as conn:
        history = await reads.part_history(conn, part_id)
    if history is None:
        return _back("/admin/messages", err="No such part.")
    return _page(request, "part.html", sess, **history)


# --- accounts ----------------------------------------------------------------------------------

@router.get("/accounts")
async def accounts_list(request: Request) -> Response:
    sess = await _session(request)
    page = _int(request.query_params.get("page"))
    async with request.app.state.db.connect() as conn:
        rows = await reads.accounts_page(conn, page)
    return _page(request, "accounts.html", sess, rows=rows, page=page, size=reads.PAGE)


@router.get("/accounts/{account_id}")
async def account(account_id: int, request: Request) -> Response:
    sess = await _session(request)
    before = request.query_params.get("before")
    async with request.app.state.db.connect() as conn:
        row = await accounts_repo.get_account(conn, account_id)
        if row is None:
            return _back("/admin/accounts", err="No such account.")
        ctx = {
            "account": row,
            "ledger": await reads.ledger_page(conn, account_id,
                                              _int(before) if before else None),
            "tokens": await reads.tokens_of(conn, account_id),
            "own_rates": await rates.list_rates(conn, account_id),
            "default_rates": (await rates.list_rates(conn, None, only_account=True))[:200],
            "campaigns": await reads.campaigns_page(conn, 0, "bulk", account_id),
            "smpp_users": await reads.smpp_users_of(conn, account_id),
            "numbers": await inbound_repo.list_numbers(conn, account_id),
        }
    return _page(request, "account.html", sess, new_token=request.query_params.get("token"),
                 **ctx)


@router.post("/accounts/{account_id}/topup")
async def topup(account_id: int, request: Request) -> Response:
    form = await _form(request, await _session(request))
    back = f"/admin/accounts/{account_id}"

    async def go(conn: Any) -> Any:
        amount = accounts.parse_amount(form.get("amount", ""))
        return await accounts.topup(conn, account_id, amount, form.get("note") or None)

    return await _write(request, back, go, "Balance is now {result}.")


@router.post("/accounts/{account_id}/credit-limit")
async def credit_limit(account_id: int, request: Request) -> Response:
    form = await _form(request, await _session(request))

    async def go(conn: Any) -> Any:
        value = accounts.parse_amount(form.get("credit_limit", ""), "credit limit")
        if value < 0:
            raise OperatorError("credit limit must be 0 or more")
        if not await accounts_repo.set_account_fields(conn, account_id, credit_limit=value):
            raise OperatorError("no such account")
        return value

    return await _write(request, f"/admin/accounts/{account_id}", go,
                        "Credit limit is now {result}.")


@router.post("/accounts/{account_id}/status")
async def account_status(account_id: int, request: Request) -> Response:
    form = await _form(request, await _session(request))
    status = form.get("status", "")

    async def go(conn: Any) -> Any:
        await services.set_account_status(conn, account_id, status)
        request.app.state.token_cache = accounts.TokenCache()  # no cached token outlives it
        return status

    return await _write(request, f"/admin/accounts/{account_id}", go, "Account is {result}.")


@router.post("/accounts/{account_id}/secret")
async def rotate_secret(account_id: int, request: Request) -> Response:
    sess = await _session(request)
    await _form(request, sess)
    try:
        async with request.app.state.db.begin() as conn:
            secret = await services.rotate_signing_secret(conn, account_id)
    except OperatorError as exc:
        return _back(f"/admin/accounts/{account_id}", err=str(exc))
    # shown on the page itself, never in a URL (which access logs and history keep)
    response = _page(request, "token_created.html", sess, token=secret, account_id=account_id,
                     what="signing secret")
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/accounts/{account_id}/tokens")
async def token_create(account_id: int, request: Request) -> Response:
    await _form(request, await _session(request))
    try:
        async with request.app.state.db.begin() as conn:
            token, _token_id = await accounts.create_token(conn, account_id)
    except OperatorError as exc:
        return _back(f"/admin/accounts/{account_id}", err=str(exc))
    # shown once, on the page it lands on; only its hash is stored
    response = _page(request, "token_created.html", await _session(request), token=token,
                     account_id=account_id, what="API token")
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/tokens/{token_id}/revoke")
async def token_revoke(token_id: int, request: Request) -> Response:
    form = await _form(request, await _session(request))
    back = f"/admin/accounts/{_int(form.get('account_id'))}"

    async def go(conn: Any) -> Any:
        await accounts.revoke_token(conn, token_id)
        return token_id

    return await _write(request, back, go, "Token {result} revoked.")


# --- SMPP users, inbound URL and numbers of an account ------------------------------------------

def _optional(form: dict[str, str], field: str, kind: Any) -> Any:
    raw = form.get(field, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise OperatorError(f"{field.replace('_', ' ')} {raw!r} is not a number") from None


@router.post("/accounts/{account_id}/smpp-users")
async def smpp_user_create(account_id: int, request: Request) -> Response:
    form = await _form(request, await _session(request))

    async def go(conn: Any) -> Any:
        system_id = form.get("system_id", "").strip()
        allow_ip = [a for a in form.get("allow_ip", "").split(",") if a.strip()]
        max_binds, window = _optional(form, "max_binds", int), _optional(form, "window", int)
        await smpp_users.create_user(
            conn, account_id, system_id, form.get("password", ""),
            max_binds=4 if max_binds is None else max_binds,  # the CLI's defaults
            window=100 if window is None else window,
            tps=_optional(form, "tps", float), burst=_optional(form, "burst", int),
            allow_ip=allow_ip)
        return system_id

    return await _write(request, f"/admin/accounts/{account_id}", go,
                        "SMPP user {result} created.")


@router.post("/smpp-users/{system_id}/revoke")
async def smpp_user_revoke(system_id: str, request: Request) -> Response:
    form = await _form(request, await _session(request))
    account_id = _int(form.get("account_id"))

    async def go(conn: Any) -> Any:
        mine = {u["system_id"] for u in await smpp_users.list_users(conn, account_id)}
        if system_id not in mine:
            raise OperatorError(f"account {account_id} has no active SMPP user {system_id}")
        await smpp_users.revoke_user(conn, system_id)
        return system_id

    return await _write(request, f"/admin/accounts/{account_id}", go,
                        "SMPP user {result} revoked: its binds are closed within seconds.")


@router.post("/accounts/{account_id}/inbound-url")
async def inbound_url(account_id: int, request: Request) -> Response:
    form = await _form(request, await _session(request))

    async def go(conn: Any) -> Any:
        values = await inbound.update_account(conn, account_id,
                                              inbound_url=form.get("inbound_url", "").strip())
        return values["inbound_url"] or "removed"

    return await _write(request, f"/admin/accounts/{account_id}", go, "Inbound URL: {result}.")


@router.post("/accounts/{account_id}/numbers")
async def number_assign(account_id: int, request: Request) -> Response:
    form = await _form(request, await _session(request))

    async def go(conn: Any) -> Any:
        number, word, previous = await inbound.assign_number(
            conn, account_id, form.get("number", ""), form.get("keyword", "").strip() or None)
        taken = f" (taken from account {previous})" if previous not in (None, account_id) else ""
        return f"{number}{' ' + word if word else ''}{taken}"

    return await _write(request, f"/admin/accounts/{account_id}", go,
                        "Number {result} assigned.")


@router.post("/accounts/{account_id}/numbers/unassign")
async def number_unassign(account_id: int, request: Request) -> Response:
    form = await _form(request, await _session(request))
    keyword = form.get("keyword", "")

    async def go(conn: Any) -> Any:
        try:
            number = inbound.clean_number(form.get("number", ""))
        except ValueError as exc:
            raise OperatorError(str(exc)) from None
        owners = await inbound_repo.owners_of(conn, number)
        if owners.get(keyword) != account_id:  # never another account's number
            raise OperatorError(f"account {account_id} does not own {number}"
                                + (f" for keyword {keyword}" if keyword else ""))
        # exactly that row ("" is the number's default owner, which manage.unassign_number
        # cannot name: None there means every keyword of the number)
        await inbound_repo.unassign_number(conn, number, keyword)
        return number + (f" {keyword}" if keyword else "")

    return await _write(request, f"/admin/accounts/{account_id}", go,
                        "Number {result} unassigned.")


# --- inbound messages and opt-outs -------------------------------------------------------------

def _opt_out_key(raw: str | None) -> tuple[int, str, str] | None:
    """The opt-out page's keyset cursor, "account:recipient:sender"."""
    parts = (raw or "").split(":")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1], parts[2]


@router.get("/inbound")
async def inbound_page(request: Request) -> Response:
    sess = await _session(request)
    q = request.query_params
    filters = {"account": q.get("account", "").strip(), "number": q.get("number", "")[:40],
               "oo_account": q.get("oo_account", "").strip(),
               "oo_number": q.get("oo_number", "")[:40]}
    errors = []
    numbers: dict[str, str | None] = {}
    for field in ("number", "oo_number"):
        numbers[field] = reads.number_digits(filters[field]) if filters[field].strip() else None
        if filters[field].strip() and numbers[field] is None:
            errors.append(f"{filters[field]!r} is not a number (3-20 digits)")
    accounts_of: dict[str, int | None] = {}
    for field in ("account", "oo_account"):
        accounts_of[field] = int(filters[field]) if filters[field].isdigit() else None
        if filters[field] and accounts_of[field] is None:
            errors.append(f"account {filters[field]!r} is not an account id")
    before = q.get("before")
    after = _opt_out_key(q.get("oo_after"))
    async with request.app.state.db.connect() as conn:
        rows = [] if errors else await reads.inbound_page(
            conn, account_id=accounts_of["account"], number=numbers["number"],
            before_id=_int(before) if before else None)
        opt_outs = [] if errors else await reads.opt_outs_page(
            conn, account_id=accounts_of["oo_account"], number=numbers["oo_number"],
            after=after)
    return _page(request, "inbound.html", sess, rows=rows, opt_outs=opt_outs, filters=filters,
                 size=reads.PAGE, filter_error="; ".join(errors),
                 query=lambda **extra: urlencode({**filters, **extra}))


@router.post("/opt-outs/remove")
async def opt_out_remove(request: Request) -> Response:
    form = await _form(request, await _session(request))
    account_id = _int(form.get("account_id"))
    recipient, sender = form.get("recipient", ""), form.get("sender", "")

    async def go(conn: Any) -> Any:
        # exactly this row: the opt-out from this sender ("" is the account-wide one)
        if not await inbound_repo.remove_opt_outs(conn, account_id, recipient, [sender]):
            raise OperatorError(f"no opt-out of {recipient} for account {account_id}"
                                + (f" from {sender}" if sender else ""))
        return recipient

    back = "/admin/inbound?" + urlencode({"oo_number": form.get("oo_number", ""),
                                          "oo_account": form.get("oo_account", "")})
    return await _write(request, back, go,
                        "Opt-out of {result} removed: sends to it are allowed again.")


# --- carriers and routes -----------------------------------------------------------------------

@router.get("/carriers")
async def carriers(request: Request) -> Response:
    sess = await _session(request)
    async with request.app.state.db.connect() as conn:
        rows = await reads.carrier_rows(conn)
        routes = await carriers_repo.list_routes(conn)
        errors = await reads.carrier_errors(conn, reads.hour_ago(utcnow()))
        workers, binds = await reads.workers_and_binds(
            conn, utcnow(), stale_after(request.app.state.settings))
        slots = await slots_repo.holders(conn, utcnow())
    configs: dict[str, Any] = {}
    for r in rows:
        try:
            configs[r.name] = carriers_repo.carrier_config(r)
        except (TypeError, ValueError):
            configs[r.name] = None
    return _page(request, "carriers.html", sess, rows=rows, routes=routes, errors=errors,
                 configs=configs, binds=binds, workers=workers, slots=slots)


def _carrier_settings(form: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, kind in (("tps", float), ("window", int), ("binds", int)):
        raw = form.get(field, "").strip()
        if raw:
            try:
                out[field] = kind(raw)
            except ValueError:
                raise OperatorError(f"{field} {raw!r} is not a number") from None
    return out


def _port(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise OperatorError(f"port {raw!r} is not a number") from None


@router.post("/carriers")
async def carrier_add(request: Request) -> Response:
    form = await _form(request, await _session(request))

    async def go(conn: Any) -> Any:
        name = form.get("name", "").strip()
        await carriers_repo.add_carrier(
            conn, name=name, host=form.get("host", "").strip(),
            port=_port(form.get("port", "")), system_id=form.get("system_id", "").strip(),
            password=form.get("password", ""), settings=_carrier_settings(form))
        if form.get("match", "").strip():
            await carriers_repo.add_route(conn, match=form["match"].strip(), carrier=name,
                                          priority=_int(form.get("priority"), 100))
        return name

    return await _write(request, "/admin/carriers", go, "Carrier {result} added.")


@router.post("/carriers/{name}/edit")
async def carrier_edit(name: str, request: Request) -> Response:
    form = await _form(request, await _session(request))

    async def go(conn: Any) -> Any:
        await carriers_repo.update_carrier(
            conn, name, host=form.get("host") or None,
            port=_port(form["port"]) if form.get("port") else None,
            system_id=form.get("system_id") or None, password=form.get("password") or None,
            settings=_carrier_settings(form))
        return name

    return await _write(request, "/admin/carriers", go, "Carrier {result} updated.")


@router.post("/carriers/{name}/enabled")
async def carrier_enabled(name: str, request: Request) -> Response:
    form = await _form(request, await _session(request))
    enabled = form.get("enabled") == "1"

    async def go(conn: Any) -> Any:
        await carriers_repo.set_carrier_enabled(conn, name, enabled)
        return "enabled" if enabled else "disabled"

    return await _write(request, "/admin/carriers", go, f"Carrier {name} {{result}}.")


@router.post("/routes")
async def route_add(request: Request) -> Response:
    form = await _form(request, await _session(request))

    async def go(conn: Any) -> Any:
        return await carriers_repo.add_route(conn, match=form.get("match", "").strip(),
                                             carrier=form.get("carrier", "").strip(),
                                             priority=_int(form.get("priority"), 100))

    return await _write(request, "/admin/carriers", go, "Route {result} added.")


@router.post("/routes/{route_id}/remove")
async def route_remove(route_id: int, request: Request) -> Response:
    await _form(request, await _session(request))

    async def go(conn: Any) -> Any:
        await carriers_repo.remove_route(conn, route_id)
        return route_id

    return await _write(request, "/admin/carriers", go, "Route {result} removed.")


def money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".") or "0"


templates.env.filters["money"] = money
templates.env.filters["when"] = lambda t: "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")
