"""The built-in simulated carrier: accepts every part, reports after a short delay.

Lets `tikosms serve` work end to end with no carrier at all. Settings: receipt delay and the
shares of UNDELIV / REJECTD receipts (TIKOSMS_SIM_*). Receipts still pending when the process
stops are not sent (the parts stay ENROUTE): it is a simulator, not a carrier.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

from tikosms.db.types import utcnow
from tikosms.delivery.carrier import OutboundPart, Receipt, ReceiptHandler, SubmitOutcome

log = logging.getLogger("tikosms.delivery.simulated")

NAME = "simulated"


class SimulatedCarrier:
    name = NAME

    def __init__(
        self,
        receipt_delay_ms: int = 200,
        undeliv_ratio: float = 0.0,
        reject_ratio: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.receipt_delay = receipt_delay_ms / 1000
        self.undeliv_ratio = undeliv_ratio
        self.reject_ratio = reject_ratio
        self._rng = rng or random.Random()
        self._on_receipt: ReceiptHandler | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._running = False

    @property
    def available(self) -> bool:
        return self._running

    async def start(self, on_receipt: ReceiptHandler) -> None:
        self._on_receipt = on_receipt
        self._running = True

    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        message_id = uuid.uuid4().hex
        roll = self._rng.random()
        if roll < self.reject_ratio:
            status, err = "REJECTD", "001"
        elif roll < self.reject_ratio + self.undeliv_ratio:
            status, err = "UNDELIV", "001"
        else:
            status, err = "DELIVRD", None
        task = asyncio.create_task(self._report(message_id, status, err))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return SubmitOutcome.accepted(message_id)

    async def _report(self, message_id: str, status: str, err: str | None) -> None:
        await asyncio.sleep(self.receipt_delay)
        assert self._on_receipt is not None
        try:
            await self._on_receipt(Receipt(message_id, status, err, utcnow()))
        except Exception:
            log.exception("simulated receipt for %s could not be recorded", message_id)

    async def stop(self) -> None:
        self._running = False
        for task in list(self._pending):
            task.cancel()
        self._pending.clear()
