"""Settings of one SMPP carrier (a frozen dataclass: the database side builds it from a row)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

BindMode = Literal["transceiver", "transmitter_receiver"]
ConcatMode = Literal["udh8", "udh16", "sar"]

# sender_type -> (source_addr_ton, source_addr_npi). TON 5 alphanumeric, 1 international,
# 3 network specific (short codes); NPI 1 is E.164, 0 unknown (SMPP 3.4, 5.2.5-5.2.6).
DEFAULT_SOURCE_TON_NPI: Mapping[str, tuple[int, int]] = {
    "Alpha": (5, 0),
    "Numeric": (1, 1),
    "Shortcode": (3, 0),
}


@dataclass(frozen=True)
class SmppCarrierConfig:
    name: str
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    # "transceiver": each bind both submits and receives receipts. "transmitter_receiver":
    # each bind is a transmitter plus a receiver connection (for SMSCs without bind_transceiver).
    bind_mode: BindMode = "transceiver"
    binds: int = 1
    window: int = 100  # submit_sm awaiting a submit_sm_resp, per bind
    tps: float | None = None  # parts per second across all binds; None: no limit of ours
    enquire_link_interval: float = 30.0  # seconds
    reconnect_initial: float = 1.0  # seconds before the first reconnect; doubles each failure
    reconnect_max: float = 60.0  # seconds, the ceiling of the backoff
    connect_timeout: float = 10.0  # seconds for the TCP connect
    response_timeout: float = 10.0  # seconds for bind_resp, submit_sm_resp, enquire_link_resp
    source_ton_npi: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: dict(DEFAULT_SOURCE_TON_NPI)
    )
    dest_ton: int = 1
    dest_npi: int = 1
    concat: ConcatMode = "udh8"
    validity_period: int | None = None  # seconds, sent as a relative validity; None: SMSC default
    registered_delivery: int = 1  # 1: a receipt for the final outcome
    service_type: str = ""
    throttle_retry_after: float = 1.0  # seconds, the RETRY delay after ESME_RTHROTTLED/RMSGQFUL
    # A throttled part is submitted again inside the connector (in order, after a short pause
    # and a new token) up to this many times before it goes back to the worker as RETRY.
    throttle_resubmits: int = 5
    throttle_pause: float = 0.1  # seconds before such a resubmission (doubles each time)
    bind_lost_retry_after: float = 0.5  # seconds, the RETRY delay for parts lost with a bind
    stop_timeout: float = 5.0  # seconds stop() waits for responses in flight before unbinding

    def __post_init__(self) -> None:
        if self.bind_mode not in ("transceiver", "transmitter_receiver"):
            raise ValueError(
                f"bind_mode must be transceiver or transmitter_receiver: {self.bind_mode!r}"
            )
        if self.concat not in ("udh8", "udh16", "sar"):
            raise ValueError(f"concat must be udh8, udh16 or sar: {self.concat!r}")
        if self.binds < 1:
            raise ValueError("binds must be at least 1")
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if self.tps is not None and self.tps <= 0:
            raise ValueError("tps must be positive (or None for no limit)")
        if not 0 < self.reconnect_initial <= self.reconnect_max:
            raise ValueError("need 0 < reconnect_initial <= reconnect_max")

    def source_ton_npi_for(self, sender_type: str) -> tuple[int, int]:
        """TON/NPI for a sender type: this carrier's override, else the default table, else
        unknown/unknown (0/0) for a type neither knows."""
        if sender_type in self.source_ton_npi:
            return self.source_ton_npi[sender_type]
        return DEFAULT_SOURCE_TON_NPI.get(sender_type, (0, 0))
