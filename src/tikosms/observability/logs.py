"""Log lines as key=value text or JSON (`TIKOSMS_LOG_FORMAT`), each with the request id of the
request that caused it.

The id lives in a context variable set by the HTTP middleware: every line logged while the
request is served, in its task and the tasks it starts, carries `request_id`. The access line
(logger `tikosms.access`) names the route template (`/v1/get_message`), never the query string,
so no phone number, token or callback URL reaches the log through it.
"""

from __future__ import annotations

import logging
import os
import sys
from contextvars import ContextVar
from typing import Any

import orjson

request_id: ContextVar[str | None] = ContextVar("tikosms_request_id", default=None)
access_log = logging.getLogger("tikosms.access")

# fields an access line adds to its record (`extra=`), printed by both formats
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")
_MAX_ID = 128  # characters of a client's X-Request-ID kept; longer or odd ones are replaced


def new_request_id(header: bytes | None) -> str:
    """The client's X-Request-ID when it is a plain token, else a fresh random one."""
    if header and len(header) <= _MAX_ID:
        try:
            value = header.decode("ascii")
        except UnicodeDecodeError:
            value = ""
        if value and all(c.isalnum() or c in "-_.:" for c in value):
            return value
    return os.urandom(8).hex()


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = (f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} level={record.levelname.lower()}"
                f" logger={record.name} msg={record.getMessage()!r}")
        for name in ACCESS_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                base += f" {name}={value}"
        rid = getattr(record, "request_id", None)
        if rid is not None:
            base += f" request_id={rid}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                               "level": record.levelname.lower(), "logger": record.name,
                               "msg": record.getMessage()}
        for name in ACCESS_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        rid = getattr(record, "request_id", None)
        if rid is not None:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def setup_logging(log_format: str, level: str, access: bool = True) -> None:
    """One handler on the root logger; uvicorn's loggers propagate to it (the CLI starts
    uvicorn with `log_config=None` and its access log off: ours is `tikosms.access`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    access_log.setLevel(logging.NOTSET if access else logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True
