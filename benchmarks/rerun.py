"""Send-only-what-changed, measured: a segment run twice, 1% of profiles changed.

Prints the write requests (batches, tag calls) of each run and their ratio; the goal
is a re-run with 1% changed making at most 2% of the first run's writes.

    python benchmarks/rerun.py --records 100000 --changed 0.01
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import run_target  # noqa: E402
from tests.omnisend_server import OmnisendServer  # noqa: E402

WRITES = ("POST", "PATCH", "DELETE")


def messages(records: list[dict]) -> bytes:
    schema = {
        "type": "SCHEMA",
        "stream": "segment",
        "schema": {"type": "object", "properties": {k: {} for k in records[0]}},
        "key_properties": [],
    }
    lines = [json.dumps(schema)]
    lines += [json.dumps({"type": "RECORD", "stream": "segment", "record": r}) for r in records]
    lines.append(json.dumps({"type": "ACTIVATE_VERSION", "stream": "segment", "version": 1}))
    lines.append(json.dumps({"type": "STATE", "value": {"done": True}}))
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01)
    args = parser.parse_args()
    records = [
        {"email": f"customer{i}@example.com", "first_name": f"C{i}", "tier": "gold"}
        for i in range(args.records)
    ]
    with OmnisendServer(api_keys=("bench",)) as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = {
            "api_key": "bench",
            "api_url": server.url,
            "requests_per_minute": 10_000_000,
            "tags_requests_per_minute": 10_000_000,
            "batch_poll_interval": 0.05,
            "custom_properties": {"tier": "tier"},
            "fingerprint_store_path": str(workdir / "fp.sqlite"),
        }
        counts = []
        for run_no in (1, 2):
            if run_no == 2:
                step = int(1 / args.changed)
                for record in records[::step]:
                    record["tier"] = "platinum"
            before = sum(1 for e in server.request_log() if e.method in WRITES)
            start = time.perf_counter()
            run = run_target(config, messages(records), workdir=workdir, timeout=3600)
            seconds = time.perf_counter() - start
            assert run.returncode == 0, run.stderr[-3000:]
            written = sum(1 for e in server.request_log() if e.method in WRITES) - before
            counts.append(written)
            summary = next(
                (
                    line[line.index("received") :]
                    for line in run.stderr.splitlines()
                    if "Summary for stream" in line
                ),
                "?",
            )
            print(f"run {run_no}: {written:>6} write requests, {seconds:6.1f}s  {summary[:90]}")
        print(
            f"re-run with {args.changed:.0%} changed made {counts[1] / counts[0]:.2%} of the first "
            f"run's write requests (goal: <= 2%)"
        )


if __name__ == "__main__":
    main()
