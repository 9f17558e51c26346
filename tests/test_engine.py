"""The delivery engine's contract with the run pipeline, against the real client and the
local server: `in_flight()` until an item is final, and `cancel()` that frees every
waiting thread at once and posts nothing more."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from target_omnisend.api import GENERATIONS, LATEST_VERSION
from target_omnisend.client import OmnisendClient
from target_omnisend.delivery import DeliveryEngine, Item
from target_omnisend.errors import Cancelled
from target_omnisend.ratelimit import RateLimits
from tests.conftest import API_KEY
from tests.omnisend_server import OmnisendServer


class Outcomes:
    """Records what the engine reports, as the pipeline's outcome sink does."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.rejected: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def delivered_items(self, items: list[Item]) -> None:
        with self.lock:
            self.delivered += [item.email for item in items]

    def rejected_item(self, item: Item, code: str, reason: str) -> None:
        with self.lock:
            self.rejected.append((item.email, code))


def _client(server: OmnisendServer, requests_per_minute: float) -> OmnisendClient:
    return OmnisendClient(
        base_url=server.url,
        api_key=API_KEY,
        generation=GENERATIONS[LATEST_VERSION],
        limits=RateLimits(requests_per_minute, 60),
    )


def _items(client: OmnisendClient, start: int, count: int, **extra: Any) -> list[Item]:
    items = []
    for n in range(start, start + count):
        email = f"e{n}@example.com"
        body = {"identifiers": [{"type": "email", "id": email}]}
        item = Item(stream="s", email=email, body=body, record={"email": email}, **extra)
        item.payload = client.encode_contact(body)
        items.append(item)
    return items


def test_an_item_is_in_flight_from_submit_until_final_tagged_included() -> None:
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.3) as server:
        client = _client(server, 100_000)
        outcomes = Outcomes()
        engine = DeliveryEngine(client, outcomes, poll_interval=0.05)
        engine.submit(_items(client, 0, 3, tags=("segment:s",)))
        assert engine.in_flight("e0@example.com")
        assert not engine.in_flight("e9@example.com")
        engine.wait_idle()
        engine.close()
        tag_calls = server.count(method="POST", path_prefix="/contacts/tags", status=202)
    assert not engine.in_flight("e0@example.com")
    assert sorted(outcomes.delivered) == [f"e{n}@example.com" for n in range(3)]
    assert tag_calls == 1  # the partly filled chunk went out at the barrier


def test_cancel_frees_waiting_threads_at_once_and_posts_nothing_more() -> None:
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.05) as server:
        client = _client(server, 2)  # two requests a minute: everything else waits
        outcomes = Outcomes()
        engine = DeliveryEngine(client, outcomes, max_pending_batches=1, poll_interval=0.05)
        engine.submit(_items(client, 0, 5))
        raised: list[BaseException] = []

        def submit_more() -> None:
            try:
                engine.submit(_items(client, 5, 5))
            except BaseException as exc:
                raised.append(exc)

        waiter = threading.Thread(target=submit_more, daemon=True)
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive(), "the second batch should wait for the only slot"
        started = time.monotonic()
        engine.cancel()
        waiter.join(1.5)
        assert not waiter.is_alive()
        assert [type(exc) for exc in raised] == [Cancelled]
        with pytest.raises(Cancelled):
            engine.wait_idle()
        engine.close()
        took = time.monotonic() - started
        posted = server.count(method="POST", path_prefix="/batches")
    assert took < 2
    assert posted == 1
    assert outcomes.delivered == []  # nothing was confirmed, so nothing is reported
