"""Behaviours an audit found unpinned (issue 22): each test fails when its behaviour is
broken the way the audit broke it, and says in its name what a user relies on.

Most are a user's command against the local Omnisend; the pacing, privacy and batch-list
rules are pinned on their own units (a fake clock where time matters, the real client
and server where requests are counted).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomllib

from target_omnisend.confirm import BatchWatcher
from target_omnisend.delivery import DeliveryEngine
from target_omnisend.privacy import one_line_error, redact
from target_omnisend.ratelimit import WindowLimiter
from tests.conftest import API_KEY
from tests.harness import TARGET_BIN, encode, read_jsonl, run_target, segment_messages
from tests.omnisend_server import FaultRule, OmnisendServer
from tests.test_confirmation import _config, _held, _lookups, _records
from tests.test_engine import Outcomes, _client, _items
from tests.test_omnisend_server import eventually
from tests.test_ratelimit import FakeClock, _acquire_in_background, _send

# -- cancel: the process ends now, not after the request in flight ------------------------


def test_a_cancel_ends_the_process_before_the_batch_in_flight_is_answered(
    tmp_path: Path,
) -> None:
    """Omnisend takes 6 s to answer a batch POST when SIGTERM comes. "Nothing more is
    sent" means the process is gone at once: it must not sit out the answer (an exit
    that waits for the sending threads would end only once the POST is answered)."""
    with OmnisendServer(api_keys=(API_KEY,)) as server:
        server.add_fault(FaultRule(method="POST", path="/batches", kind="delay", seconds=6))
        config = _config(server, tmp_path, batch_size_rows=100)
        (tmp_path / "config.json").write_text(json.dumps(config))
        proc = subprocess.Popen(
            [str(TARGET_BIN), "--config", str(tmp_path / "config.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        try:
            assert proc.stdin is not None
            # No end of input: the run is still reading when the signal comes.
            proc.stdin.write(encode(segment_messages(_records(250), key=None)[:-1]))
            proc.stdin.flush()
            assert eventually(lambda: server.fault_hits()[0][1] >= 1, timeout=30)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
        answered = server.count(method="POST", path_prefix="/batches")
    assert proc.returncode == 143, stderr.decode()[-2000:]
    assert answered == 0, "the process waited for the answer to the batch in flight"
    errors = [line for line in stderr.decode().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cancelled" in errors[0]


# -- per-item 429 and the batch-slot bound -----------------------------------------------


def test_items_omnisend_answers_429_are_sent_again_not_rejected(tmp_path: Path) -> None:
    """A finished batch may report single items as 429 (too many requests): that is
    Omnisend's load, not the contact's fault, so they go again and are delivered."""
    with OmnisendServer(api_keys=(API_KEY,)) as server:
        server.add_fault(
            FaultRule(kind="item_error", status=429, email_pattern=r"^c0000[0-4]@", times=5)
        )
        run = run_target(
            _config(server, tmp_path), segment_messages(_records(300), key=None), workdir=tmp_path
        )
        held = set(_held(server))
        fired = server.fault_hits()[0][1]
    assert run.returncode == 0, run.stderr[-2000:]
    assert fired == 5
    assert read_jsonl(tmp_path / "rejected.jsonl") == []
    assert held == {r["email"] for r in _records(300)}


def _most_unfinished_at_once(batches: list[dict[str, Any]]) -> int:
    """The most batches Omnisend held created and not yet ended at any one moment."""

    def moment(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))

    spans = [(moment(b["createdAt"]), moment(b["endedAt"])) for b in batches]
    return max(sum(1 for start, end in spans if start <= at < end) for at, _ in spans)


def test_max_pending_batches_bounds_the_batches_omnisend_holds_unfinished(
    tmp_path: Path,
) -> None:
    """max_pending_batches: 2 and Omnisend slow with every batch: at no moment does it
    hold more than two of ours unfinished (a slot is freed by a whole batch, not by
    each of its contacts)."""
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.3) as server:
        config = _config(server, tmp_path, max_pending_batches=2)
        run = run_target(config, segment_messages(_records(1000), key=None), workdir=tmp_path)
        batches = server.batches()
        held = len(_held(server))
    assert run.returncode == 0, run.stderr[-2000:]
    assert held == 1000 and len(batches) == 10
    assert _most_unfinished_at_once(batches) == 2


def test_the_barrier_confirms_once_everything_is_posted_not_while_posting() -> None:
    """Ten batches handed over, one sender, each POST 0.1 s: the barrier that waits for
    them (before STATE) reads the batch list once they are all posted, a read or two in
    all, not one every poll interval while the sender is still posting."""
    with OmnisendServer(api_keys=(API_KEY,), latency=(0.1, 0.1)) as server:
        client = _client(server, 100_000)
        outcomes = Outcomes()
        engine = DeliveryEngine(client, outcomes, max_concurrency=1, poll_interval=0.05)
        for n in range(10):
            engine.submit(_items(client, 100 * n, 100))
        engine.wait_idle()
        engine.close()
        reads = server.count(method="GET", path_prefix="/batches")
    assert len(outcomes.delivered) == 1000
    assert 1 <= reads <= 3, reads


# -- the batch list: where a walk starts, how often a laggard is looked up -----------------


def _watcher(server: OmnisendServer, **kwargs: Any) -> BatchWatcher:
    return BatchWatcher(_client(server, 100_000), **kwargs)


def _post_batches(server: OmnisendServer, count: int) -> list[str]:
    client = _client(server, 100_000)
    return [client.create_batch([p.payload for p in _items(client, n, 1)]) for n in range(count)]


def test_an_oldest_first_list_is_read_from_the_first_of_ours_one_page_a_poll(
    tmp_path: Path,
) -> None:
    """600 other integrations' batches, then 40 of ours, oldest first. The first poll
    pages down to ours; every later poll starts at the first of ours and finds all 40
    on one page (starting at the last of ours would miss the others and wrap around)."""
    with OmnisendServer(
        api_keys=(API_KEY,), batch_list_order="oldest_first", foreign_batches=600, batch_delay=600
    ) as server:
        ours = _post_batches(server, 40)
        watcher = _watcher(server)
        for batch_id in ours:
            watcher.watch(batch_id)
        assert set(watcher.poll()) == set(ours)
        first = watcher.stats.list_requests
        for _ in range(5):
            assert set(watcher.poll()) == set(ours)
        later = watcher.stats.list_requests - first
    assert first >= 3  # 600 foreign entries come first: pages of 250
    assert later == 5, later


def test_a_batch_the_list_never_shows_is_looked_up_less_and_less_often(
    tmp_path: Path,
) -> None:
    """Our batch is unfinished and, on a list whose days the docs leave open, never listed
    (here: our clock says it is two days later, so the list from that day is empty).
    Polled every second for two minutes, it is looked up at a doubling interval (5, 10,
    20, 40, 60 s), so at most 6 times, not every 5 s (24 times)."""
    clock = FakeClock()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=600) as server:
        [batch_id] = _post_batches(server, 1)
        watcher = _watcher(server, clock=clock, wall_clock=lambda: later)
        watcher.watch(batch_id)
        seen = set()
        for _ in range(120):
            seen |= set(watcher.poll())
            clock.now += 1.0
        lookups = _lookups(server)
    assert seen == {batch_id}  # the lookups did find it
    assert watcher.stats.lookups == lookups
    assert 3 <= lookups <= 6, lookups


# -- pacing: the wait announced is the wait there is ------------------------------------


def test_the_announced_rate_limit_wait_is_until_the_request_that_frees_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three requests at t=0, 10 and 20 s; at t=30 s Omnisend says its limit is 2. The
    next request may go when the second one leaves the window (t=70 s): the log says
    "waiting 40 s", and the request indeed waits until then."""
    clock = FakeClock()
    start = clock.now
    limiter = WindowLimiter(3, clock=clock)
    for offset in (0, 10, 20):
        clock.now = start + offset
        _send(limiter)
    clock.now = start + 30
    limiter.observe({"X-Rate-Limit-Limit": "2", "X-Rate-Limit-Remaining": "0"})
    with caplog.at_level(logging.INFO, logger="target-omnisend.ratelimit"):
        done = _acquire_in_background(limiter)
        assert eventually(lambda: "rate-limit window" in caplog.text)
    assert "waiting 40 s for Omnisend's rate-limit window" in caplog.text, caplog.text
    clock.now = start + 69.9
    assert not done.wait(0.3)
    clock.now = start + 70.1
    assert done.wait(2)


# -- privacy: a key pasted with a line break -----------------------------------------------


@pytest.mark.parametrize("separator", ["\r\n", "\n", "\t", " "])
def test_each_piece_of_a_key_split_by_a_line_break_is_redacted(separator: str) -> None:
    """A key pasted with a line break reaches an error text in pieces (a header value
    is cut at the break); neither piece may show."""
    key = f"abcd1234efgh{separator}5678ijklmnop"
    for text in ("header value: abcd1234efgh", "rest: 5678ijklmnop", f"whole: {key}"):
        assert "abcd1234efgh" not in redact(text, key)
        assert "5678ijklmnop" not in redact(text, key)
        assert "abcd1234efgh" not in one_line_error(text, [key])
    assert redact("header value: abcd1234efgh", key) == "header value: ***"


# -- a hang would otherwise have no name -------------------------------------------------


def test_the_suite_wide_timeout_is_configured() -> None:
    """A test that hangs (a regression that blocks on a fake clock, say) must fail and
    be named, not stall the suite: pytest-timeout with a limit well above the slowest
    test."""
    options = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    timeout = options["tool"]["pytest"]["ini_options"]["timeout"]
    dev = options["project"]["optional-dependencies"]["dev"]
    assert isinstance(timeout, int) and 60 <= timeout <= 900
    assert any(d.startswith("pytest-timeout") for d in dev)
