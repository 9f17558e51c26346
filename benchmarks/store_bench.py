"""The fingerprint store's backends side by side: a re-run of N unchanged contacts.

Per backend (the SQLite file, then a PostgreSQL schema), in the same run: a first
export that fills the store, then a re-run of the same input, which must find every
contact unchanged and send no batch. Prints wall time, CPU and peak RSS of both runs,
and the re-run's PostgreSQL/SQLite wall-time ratio (goal: at most 1.5, memory flat).

The local Omnisend-compatible server runs in its own process with no rate limit; the
PostgreSQL server is a throwaway cluster on 127.0.0.1 (as the tests start it, with
fsync off) unless --postgres-url names one. Not a test: run it on a quiet machine.

    python benchmarks/store_bench.py --records 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench import BIN, OUT, Measure, ServerProcess, generate, measure  # noqa: E402


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    """The given server, or the tests' throwaway cluster for the length of the run."""
    if url:
        yield url
        return
    from tests.test_postgres_e2e import cluster  # only when no server is given

    with contextlib.contextmanager(cluster.__wrapped__)() as pg:
        yield f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"


def run(input_path: Path, server: ServerProcess, store: dict[str, str]) -> tuple[Measure, dict]:
    summary_path = OUT / "store-bench-summary.json"
    config = {
        "api_key": "bench",
        "api_url": server.url,
        "rejected_records_path": str(OUT / "rejected.jsonl"),
        "summary_path": str(summary_path),
        "progress_interval": 0,
        "requests_per_minute": 10_000_000,  # the store is measured, not Omnisend's budget
        "tags_requests_per_minute": 10_000_000,
        "batch_poll_interval": 0.05,
        **store,
    }
    config_path = OUT / "store-bench-config.json"
    config_path.write_text(json.dumps(config))
    result = measure([str(BIN / "target-omnisend"), "--config", str(config_path)], input_path)
    if result.returncode != 0:
        raise SystemExit(f"target-omnisend failed:\n{result.stderr[-3000:]}")
    return result, json.loads(summary_path.read_text())["streams"]["segment"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", help="postgresql://user@127.0.0.1:port/db (optional)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    input_path = OUT / f"segment-{args.records}.singer"
    if not input_path.exists():
        generate(input_path, args.records)
    sqlite_path = OUT / f"store-bench-{os.getpid()}.sqlite"
    rows = []
    with postgres(args.postgres_url) as url:
        stores = {
            "sqlite": {"fingerprint_store_path": str(sqlite_path)},
            "postgresql": {
                "fingerprint_store_path": url,
                "fingerprint_store_schema": f"store_bench_{os.getpid()}",
            },
        }
        server = ServerProcess()
        try:
            for name, store in stores.items():
                first, counts = run(input_path, server, store)
                assert counts["delivered"] == args.records, counts
                again, counts = run(input_path, server, store)
                assert counts["unchanged"] == args.records and counts["delivered"] == 0, counts
                rows.append((name, first, again))
                print(
                    f"{name}: first {first.seconds:.1f}s, re-run {again.seconds:.1f}s", flush=True
                )
        finally:
            server.stop()
            for leftover in OUT.glob(f"{sqlite_path.name}*"):  # the file, -wal, -shm, .locks
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    print(f"\nRe-run of {args.records:,} unchanged contacts (first run fills the store):\n")
    print("| store | first run wall | re-run wall | re-run CPU | re-run peak RSS | ÷ SQLite |")
    print("|---|---:|---:|---:|---:|---:|")
    base = rows[0][2].seconds
    for name, first, again in rows:
        print(
            f"| {name} | {first.seconds:.1f} s | {again.seconds:.1f} s | "
            f"{again.cpu_seconds:.1f} s | {again.peak_rss_mb:.0f} MB | {again.seconds / base:.2f} |"
        )


if __name__ == "__main__":
    main()
