"""The error tree. Each domain error carries its HTTP status and a stable machine `code`;
one handler in `tikosms.app` turns any of them into the envelope
`{"success": false, "error": "<sentence>", "code": "<code>"}`.

    TikoError
    ├── NotAuthenticated        401  (body stays exactly {"error": "User not authenticated"})
    ├── Forbidden               403
    │   ├── NoRateForAccount    403  no_rate
    │   └── AccountSuspended    403  account_suspended
    ├── PaymentRequired         402  insufficient_balance
    ├── NotFound                404  not_found
    ├── Conflict                409
    ├── ValidationFailed        422  validation_failed (and the specific codes below)
    ├── RateLimited             429  rate_limited (with Retry-After)
    └── ServiceUnavailable      503  database_unavailable

The spec's own sentences (SPEC_NOTES "Envelope and errors") are constants here so that every
place uses the same words.
"""

from __future__ import annotations

from typing import Any

MSG_NOT_AUTHENTICATED = "User not authenticated"
MSG_CAMPAIGN_NOT_FOUND = "Campaign not found"
MSG_MESSAGES_NOT_FOUND = "Message(s) not found"
MSG_NO_RATE_FOUND = "No SMS rate found for this destination."
MSG_NO_RATE_FOR_ACCOUNT = (
    "No SMS rate is available for this destination for your account. Please contact sales team."
)
MSG_INVALID_NUMBER = (
    "Oops! We couldn't find this number in any country on Earth. Mind giving it another look?"
)
MSG_INVALID_CALLBACK = "Invalid callback URL provided"
MSG_INSUFFICIENT_BALANCE = "Insufficient balance"


class TikoError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.errors = errors
        self.headers = headers

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": False, "error": self.message, "code": self.code}
        if self.errors:
            out["errors"] = self.errors
        return out


class NotAuthenticated(TikoError):
    status_code = 401
    code = "not_authenticated"

    def __init__(self) -> None:
        super().__init__(MSG_NOT_AUTHENTICATED)

    def body(self) -> dict[str, Any]:
        return {"error": MSG_NOT_AUTHENTICATED}  # exactly as the spec shows it


class Forbidden(TikoError):
    status_code = 403
    code = "forbidden"


class NoRateForAccount(Forbidden):
    code = "no_rate"

    def __init__(self) -> None:
        super().__init__(MSG_NO_RATE_FOR_ACCOUNT)


class AccountSuspended(Forbidden):
    code = "account_suspended"

    def __init__(self) -> None:
        super().__init__("This account is suspended. Please contact your provider.")


class PaymentRequired(TikoError):
    status_code = 402
    code = "insufficient_balance"

    def __init__(self, message: str = MSG_INSUFFICIENT_BALANCE) -> None:
        super().__init__(message)


class NotFound(TikoError):
    status_code = 404
    code = "not_found"


class Conflict(TikoError):
    status_code = 409
    code = "conflict"


class ValidationFailed(TikoError):
    status_code = 422
    code = "validation_failed"


class InvalidNumberError(ValidationFailed):
    code = "invalid_number"

    def __init__(self, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(MSG_INVALID_NUMBER, errors=errors)


class InvalidCallbackUrl(ValidationFailed):
    code = "invalid_callback_url"

    def __init__(self) -> None:
        super().__init__(MSG_INVALID_CALLBACK)


class RateLimited(TikoError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(TikoError):
    status_code = 503
    code = "service_unavailable"


class PayloadTooLarge(TikoError):
    status_code = 413
    code = "payload_too_large"


class OperatorError(Exception):
    """A mistake in an operator's command (CLI): one clear line, non-zero exit."""
