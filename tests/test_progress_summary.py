"""Progress lines on long runs, and a machine-readable summary whose counters agree
with what Omnisend (the local server) actually holds."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import API_KEY
from tests.harness import read_jsonl, run_target, sample_records, segment_messages
from tests.omnisend_server import OmnisendServer


def test_progress_lines_and_summary_agree_with_the_server(tmp_path: Path) -> None:
    records = sample_records()
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.4) as server:
        config = {
            "api_key": API_KEY,
            "api_url": server.url,
            "rejected_records_path": str(tmp_path / "rejected.jsonl"),
            "summary_path": str(tmp_path / "summary.json"),
            "progress_interval": 0.2,
            "batch_size_rows": 100,  # several drains, so the run lasts a few polls
            "batch_poll_interval": 0.05,
        }
        run = run_target(config, segment_messages(records, key="customer_id"), workdir=tmp_path)
        stored = len(server.contacts())
    assert run.returncode == 0, run.stderr[-2000:]
    progress = [line for line in run.stderr.splitlines() if "Progress: received=" in line]
    assert progress, "a run of over a second prints progress lines"
    summary = json.loads((tmp_path / "summary.json").read_text())
    counts = summary["streams"]["vip_buyers"]
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    # The sample holds one profile twice (emails differing by case): it is either merged
    # (same drain) or delivered twice in order (different drains) — never lost.
    assert counts["delivered"] + counts["merged_duplicates"] == stored + 1
    assert counts["rejected"] == len(rejected)
    assert counts["received"] == len(records)
    assert (
        counts["delivered"] + counts["rejected"] + counts["merged_duplicates"] + counts["unchanged"]
        == counts["received"]
    )
    # Full batches of 100 until the end of input, then the rest; nothing retried or split.
    assert summary["batches"] == -(-counts["delivered"] // 100)
    assert summary["requests"] == (
        1
        + summary["batches"]
        + summary["polls"]
        + summary["tag_calls"]
        + summary["item_fetches"]
        + summary["segment_requests"]
    )
    assert API_KEY not in (tmp_path / "summary.json").read_text()


def test_state_is_checkpointed_every_state_interval_while_records_flow(tmp_path: Path) -> None:
    """A slow tap: STATEs come out during the run (not only at the end), and each one
    covers only contacts Omnisend already holds."""
    import subprocess
    import threading
    import time

    from tests.harness import TARGET_BIN, encode

    with OmnisendServer(api_keys=(API_KEY,)) as server:
        config = {
            "api_key": API_KEY,
            "api_url": server.url,
            "rejected_records_path": str(tmp_path / "rejected.jsonl"),
            "state_interval": 1,
            "batch_poll_interval": 0.05,
        }
        (tmp_path / "config.json").write_text(json.dumps(config))
        proc = subprocess.Popen(
            [str(TARGET_BIN), "--config", str(tmp_path / "config.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        checkpoints: list[tuple[int, int]] = []  # (records covered, contacts stored then)

        def watch_states() -> None:
            for line in proc.stdout:
                if line.strip():
                    checkpoints.append((json.loads(line)["sent"], len(server.contacts())))

        watcher = threading.Thread(target=watch_states)
        watcher.start()
        records = [{"email": f"slow{i}@example.com"} for i in range(40)]
        messages = segment_messages(records, stream="slow")
        proc.stdin.write(encode(messages[:1]))
        for n, record in enumerate(messages[1:-1], 1):
            proc.stdin.write(encode([record, {"type": "STATE", "value": {"sent": n}}]))
            proc.stdin.flush()
            time.sleep(0.1)
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        watcher.join(timeout=10)
    states = [sent for sent, _ in checkpoints]
    assert states[0] < 40, "checkpoints during a 4-second run, not only at its end"
    assert states == sorted(set(states)) and states[-1] == 40
    # A checkpoint covers every record before its STATE (and at most the one record that
    # triggered the drain after it): exactly those are stored.
    assert all(stored - sent in (0, 1) for sent, stored in checkpoints[:-1])
    assert checkpoints[-1] == (40, 40)
