"""Which due events a claim leases, as chains per part, and which it holds back until when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tikosms.callbacks.dispatcher import HELD_BACK_GAP, HELD_BACK_RECHECK, plan_claim
from tikosms.callbacks.repository import PendingEvent

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=1)  # a retry, or a lease's end
EARLIER = NOW - timedelta(minutes=1)


def pending(event_id: int, part_id: int, due: datetime = NOW,
            leased_until: datetime | None = None) -> PendingEvent:
    return PendingEvent(event_id, part_id, due, leased_until)


@pytest.mark.parametrize(("candidates", "events", "chains", "held_back"), [
    # a part's first pending event is due: it and the events after it form one chain
    ({1, 2}, [pending(1, 7), pending(2, 7), pending(3, 7, due=LATER)], [[1, 2, 3]], []),
    # only the first is a candidate: its successors come along all the same
    ({1}, [pending(1, 7), pending(2, 7)], [[1, 2]], []),
    # the first waits for a retry: the candidate behind it is due just after that retry
    ({2}, [pending(1, 7, due=LATER), pending(2, 7)], [], [(2, LATER + HELD_BACK_GAP)]),
    # the first is leased by another dispatcher: looked at again within a few seconds
    ({2}, [pending(1, 7, due=LATER, leased_until=LATER), pending(2, 7)], [],
     [(2, NOW + HELD_BACK_RECHECK + HELD_BACK_GAP)]),
    # the first is due and unleased but not ours (another claim has it locked): right after now
    ({2}, [pending(1, 7), pending(2, 7)], [], [(2, NOW + HELD_BACK_GAP)]),
    # an expired lease holds nothing back: the chain takes the event
    ({1}, [pending(1, 7, leased_until=EARLIER), pending(2, 7, leased_until=EARLIER)],
     [[1, 2]], []),
    # a successor leased elsewhere ends the chain; a candidate after it waits to be rechecked
    ({1, 3}, [pending(1, 7), pending(2, 7, leased_until=LATER), pending(3, 7)], [[1]],
     [(3, NOW + HELD_BACK_RECHECK + HELD_BACK_GAP)]),
    # parts are planned independently
    ({1, 4}, [pending(1, 7), pending(2, 7), pending(3, 8, due=LATER), pending(4, 8)],
     [[1, 2]], [(4, LATER + HELD_BACK_GAP)]),
])
def test_claim_leases_chains_from_a_parts_first_event_and_holds_back_the_rest(
    candidates: set[int], events: list[PendingEvent], chains: list[list[int]],
    held_back: list[tuple[int, datetime]],
) -> None:
    assert plan_claim(candidates, events, NOW) == (chains, held_back)


def test_a_held_back_event_is_never_due_before_now() -> None:
    events = [pending(1, 7, due=EARLIER), pending(2, 7)]
    assert plan_claim({2}, events, NOW) == ([], [(2, NOW + HELD_BACK_GAP)])
