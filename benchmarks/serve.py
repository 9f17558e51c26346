"""The local server for benchmarks, with any of its knobs: `python benchmarks/serve.py
'{"requests_per_minute": 400, "batch_list_order": "oldest_first"}'`.

Prints `OMNISEND_SERVER_URL=...` once it listens; on SIGTERM prints one JSON line of
what the target asked for (batch writes, list reads, per-batch lookups, item fetches,
tag calls, 429s), so a benchmark reports requests the server saw, not what the target
believes it sent.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.omnisend_server import OmnisendServer, RequestLogEntry

KINDS = (
    ("batch_writes", "POST", re.compile(r"^/batches$")),
    ("list_reads", "GET", re.compile(r"^/batches$")),
    ("lookups", "GET", re.compile(r"^/batches/[^/]+$")),
    ("item_fetches", "GET", re.compile(r"^/batches/[^/]+/items$")),
    ("tag_calls", "POST", re.compile(r"^/contacts/tags$")),
)


def tally(log: list[RequestLogEntry]) -> dict[str, int]:
    """Requests by kind; 429s counted apart (they were refused, not served)."""
    counts: Counter[str] = Counter()
    for entry in log:
        if entry.status == 429:
            counts["rate_limited"] += 1
            continue
        for name, method, path in KINDS:
            if entry.method == method and path.match(entry.path):
                counts[name] += 1
        counts["all"] += 1
    return dict(counts)


def main() -> int:
    knobs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    knobs.setdefault("api_keys", ["bench"])
    if "latency" in knobs:
        knobs["latency"] = tuple(knobs["latency"])
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = OmnisendServer(**knobs).start()
    print(f"OMNISEND_SERVER_URL={server.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
        print(json.dumps(tally(server.request_log())), flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
