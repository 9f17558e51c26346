"""Attacks on today's promises: each test is a user's command (or the unit under test on
a fake clock) and the result the promise says they should see."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from target_omnisend.ratelimit import WindowLimiter
from tests.conftest import API_KEY
from tests.harness import read_jsonl, run_target, sample_records, segment_messages, stored_email
from tests.omnisend_server import FaultRule, OmnisendServer
from tests.test_confirmation import _config
from tests.test_ratelimit import FakeClock, _acquire_in_background

# -- promise 2: a request counts from its answer; the server never sees more than the limit


def test_a_request_still_on_its_way_after_a_whole_window_still_holds_its_budget() -> None:
    """request_timeout may be up to 600 s. A slow request (a POST /batches Omnisend
    takes 70 s to answer) is still on its way after 60 s; a sliding-window server may
    count it at any moment until its answer. Its budget must not be handed to another
    request while it is in flight: with a limit of 1, the server would then see two
    requests inside one window (the new one and the slow one counted at its answer)."""
    clock = FakeClock()
    limiter = WindowLimiter(1, clock=clock)
    slow = limiter.acquire()  # sent at t=1000, no answer yet
    clock.now += 61  # still no answer
    second = _acquire_in_background(limiter)
    sent_while_slow_in_flight = second.wait(0.5)
    clock.now += 9
    limiter.answered(slow)  # the server counted it at t=1070 at the latest
    assert not sent_while_slow_in_flight, (
        "a second request went out at t=1061 while the first (limit 1) was still on its "
        "way; a server counting the first at its answer (t=1070) sees 2 in one window"
    )


# -- promise 4: a broken --config file is one 'Invalid configuration' line, exit 2


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("deeply-nested-not-json", "[" * 100_000),  # unterminated: not JSON at all
        ("a-list", "[1, 2]"),
        ("null", "null"),
    ],
)
def test_a_config_file_that_is_not_a_json_object_is_one_line(
    tmp_path: Path, name: str, content: str
) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(content)
    run = run_target(
        None, segment_messages(sample_records()[:1]), workdir=tmp_path, args=["--config", str(path)]
    )
    assert "Traceback" not in run.stderr, run.stderr[-1500:]
    assert run.returncode == 2, run.stderr[-1500:]
    lines = [line for line in run.stderr.splitlines() if "Invalid configuration" in line]
    assert len(lines) == 1 and str(path) in lines[0], run.stderr[-1500:]


def test_an_empty_config_path_is_one_line(tmp_path: Path) -> None:
    """`--config "$CONFIG"` with the variable unset: a missing file."""
    run = run_target(
        None, segment_messages(sample_records()[:1]), workdir=tmp_path, args=["--config", ""]
    )
    assert "Traceback" not in run.stderr, run.stderr[-1500:]
    assert run.returncode == 2, run.stderr[-1500:]
    lines = [line for line in run.stderr.splitlines() if "Invalid configuration" in line]
    assert len(lines) == 1, run.stderr[-1500:]


def test_a_429_without_a_hint_never_pauses_longer_than_max_wait(tmp_path: Path) -> None:
    """Omnisend answers 429 four times, with neither Retry-After, retryAfter nor
    rate-limit headers. The user set max_wait: 5 ("the longest single pause the target
    accepts when Omnisend's rate limit asks it to wait"): no pause may be longer."""
    with OmnisendServer(api_keys=(API_KEY,), rate_limit_headers=False) as server:
        server.add_fault(
            FaultRule(
                method="POST",
                path="/batches",
                kind="status",
                status=429,
                times=4,
                body={"title": "Too Many Requests", "status": 429},
            )
        )
        config = _config(server, tmp_path, max_wait=5)
        del config["requests_per_minute"]  # Omnisend's own pace: the 429s decide
        records = [{"email": f"c{i:05d}@example.com"} for i in range(10)]
        run = run_target(config, segment_messages(records, key=None), workdir=tmp_path)
    waits = [int(s) for s in re.findall(r"waiting (\d+) s for Omnisend's rate-limit", run.stderr)]
    assert all(wait <= 5 for wait in waits), (waits, run.stderr[-1500:])


@pytest.mark.parametrize("huge", ["1e5000", "1e10000000"])
def test_an_absurdly_large_setting_is_one_invalid_configuration_line_at_once(
    tmp_path: Path, huge: str
) -> None:
    """`"max_wait": 1e10000000` (someone's "forever") is valid JSON that a JSON reader
    reads as a float (inf). It must end in one 'Invalid configuration' line naming the
    setting, exit 2, at once; not a 'Run failed: ValueError' nor a CLI that hangs (and
    ignores SIGTERM) while it builds a ten-million-digit integer."""
    path = tmp_path / "config.json"
    path.write_text(
        f'{{"api_key": "k3y-secret-value", "api_url": "http://127.0.0.1:9", "max_wait": {huge}}}'
    )
    try:
        run = run_target(
            None,
            segment_messages(sample_records()[:1]),
            workdir=tmp_path,
            args=["--config", str(path)],
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"max_wait: {huge} -> the CLI was still busy after 30 s")
    assert run.returncode == 2, run.stderr[-1500:]
    lines = [line for line in run.stderr.splitlines() if "Invalid configuration" in line]
    assert len(lines) == 1 and "max_wait" in lines[0], run.stderr[-1500:]


# -- promise 1: every record ends delivered or rejected with a reason (tags on)


def test_one_refused_tag_call_rejects_its_contacts_instead_of_failing_the_run(
    tmp_path: Path,
) -> None:
    """Omnisend refuses one tag call (HTTP 400, e.g. one address it will not tag). A
    refused batch is split until the refusal names single items, which are rejected
    with the reason; a refused tag call should end its contacts the same way (rejected
    with a reason, or delivered after a split), not end the whole run."""
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.02) as server:
        server.add_fault(
            FaultRule(method="POST", path="/contacts/tags", kind="status", status=400, times=1)
        )
        config = _config(server, tmp_path, segment_tag="segment:vip_buyers")
        records = [{"email": f"c{i:05d}@example.com"} for i in range(300)]
        run = run_target(config, segment_messages(records, key=None), workdir=tmp_path)
        tagged = {
            stored_email(c) for c in server.contacts() if "segment:vip_buyers" in c.get("tags", [])
        }
    assert run.returncode == 0, run.stderr[-1500:]
    rejected = {r["record"]["email"] for r in read_jsonl(tmp_path / "rejected.jsonl")}
    assert tagged | rejected == {r["email"] for r in records}


def test_a_tag_omnisend_refuses_for_everyone_ends_the_run_in_one_line(tmp_path: Path) -> None:
    """The counterpart: when every tag call is refused the tag itself is the problem.
    The run ends with one line naming the setting after a handful of calls (not one
    call per contact), and no STATE covers the untagged contacts."""
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.02) as server:
        server.add_fault(FaultRule(method="POST", path="/contacts/tags", kind="status", status=400))
        config = _config(server, tmp_path, segment_tag="segment:vip_buyers")
        records = [{"email": f"c{i:05d}@example.com"} for i in range(300)]
        run = run_target(config, segment_messages(records, key="email"), workdir=tmp_path)
        tag_calls = server.count(method="POST", path_prefix="/contacts/tags")
    assert run.returncode == 1, run.stderr[-1500:]
    assert '"type": "STATE"' not in run.stdout and '"type":"STATE"' not in run.stdout
    failed = [line for line in run.stderr.splitlines() if "Run failed" in line]
    assert len(failed) == 1 and "segment_tag" in failed[0], run.stderr[-1500:]
    assert tag_calls <= 40, tag_calls
