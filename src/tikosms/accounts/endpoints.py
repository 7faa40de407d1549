"""GET /v1/balance: the four fields only (no `success`), balance as a 4-decimal JSON number."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from tikosms import formats
from tikosms.accounts import repository as repo
from tikosms.api.deps import CurrentAccount, Db
from tikosms.api.responses import JSONResponse
from tikosms.errors import NotAuthenticated

router = APIRouter(prefix="/v1")


@router.get("/balance")
async def get_balance(account: CurrentAccount, db: Db) -> Response:
    async with db.connect() as conn:
        row = await repo.get_account(conn, account.id)
    if row is None:
        raise NotAuthenticated()
    # written by hand: a JSON number with exactly 4 decimals (634.9288, 10.5000)
    body = (
        f'{{"balance_updated":"{formats.balance_updated(row.balance_updated_at)}",'
        f'"currency_code":"{row.currency}","balance":{formats.balance(row.balance)},'
        f'"in_credit_limit":{int(row.credit_limit)}}}'
    )
    return JSONResponse(body.encode())
