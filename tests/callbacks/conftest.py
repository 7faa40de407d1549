from collections.abc import AsyncIterator

import pytest

from tests.callbacks.receiver import CallbackReceiver


@pytest.fixture
async def callback_receiver() -> AsyncIterator[CallbackReceiver]:
    """A started `CallbackReceiver` on 127.0.0.1, stopped after the test."""
    async with CallbackReceiver() as receiver:
        yield receiver
