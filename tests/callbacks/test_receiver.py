"""The test receiver itself: other test folders rely on it behaving as documented."""

import asyncio

import aiohttp
import pytest

from tests.callbacks.receiver import CallbackReceiver


async def post(url: str, payload: object = None) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, json=payload) as response:
        return response.status


async def test_records_requests_in_order(callback_receiver: CallbackReceiver) -> None:
    await post(callback_receiver.url, {"n": 1})
    await post(callback_receiver.url_for("/other"), {"n": 2})
    assert [request.json for request in callback_receiver.requests] == [{"n": 1}, {"n": 2}]
    assert [request.path for request in callback_receiver.requests] == ["/callbacks", "/other"]


async def test_a_body_that_is_not_json_is_kept_raw(callback_receiver: CallbackReceiver) -> None:
    async with aiohttp.ClientSession() as session:
        await session.post(callback_receiver.url, data=b"\xff not json")
    [received] = callback_receiver.requests
    assert (received.body, received.json) == (b"\xff not json", None)


async def test_fail_first_answers_500_then_200(callback_receiver: CallbackReceiver) -> None:
    callback_receiver.fail_first(2)
    statuses = [await post(callback_receiver.url) for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert [request.answered for request in callback_receiver.requests] == statuses


async def test_fail_first_on_one_path_leaves_the_others_alone(
    callback_receiver: CallbackReceiver,
) -> None:
    callback_receiver.fail_first(1, status=503, path="/flaky")
    assert await post(callback_receiver.url_for("/fine")) == 200
    assert await post(callback_receiver.url_for("/flaky")) == 503
    assert await post(callback_receiver.url_for("/flaky")) == 200


async def test_wait_for_wakes_when_the_request_arrives(
    callback_receiver: CallbackReceiver,
) -> None:
    waiter = asyncio.create_task(callback_receiver.wait_for(1))
    await post(callback_receiver.url, {"n": 1})
    [received] = await waiter
    assert received.json == {"n": 1}


async def test_wait_for_times_out_with_the_count_so_far(
    callback_receiver: CallbackReceiver,
) -> None:
    await post(callback_receiver.url)
    with pytest.raises(TimeoutError, match="expected 2 callback"):
        await callback_receiver.wait_for(2, timeout=0.05)


async def test_stopping_releases_a_delayed_answer() -> None:
    async with CallbackReceiver(delay=30) as receiver:
        request = asyncio.create_task(post(receiver.url))
        await receiver.wait_for(1)
    # Stopping cut the 30 s delay short: the answer came at once.
    assert await asyncio.wait_for(request, timeout=5) == 200
