"""Throughput, CPU and memory of target-omnisend against the SDK's own floor.

Prints, per size: records/s of (a) a null SDK target with the same validator,
(b) target-omnisend against the local server with no latency and no rate limit, the
ratio (b)/(a), peak RSS of each, CPU per record of the floor, the target and the local
server, and the bound those CPU costs put on (b)/(a) with this machine's cores.

Wall-clock ratios on a small machine shared with the server mostly measure the
machine, so the headline figure is CPU: the target's CPU seconds per record divided by
a null SDK target's, both measured in the same run — `cpu/dflt` against a null target
with the SDK's default validator, `cpu/fast` against one with the same fast validator.

With --rate-limited it also runs (c) against 400 requests/minute with 50-150 ms latency,
a batch list in oldest-first order and 5,000 other integrations' batches today, and
compares its wall time with the rate-limit floor (batch writes / limit), with the
confirmation requests the server saw. Not a test: run it on a quiet machine.

With --membership N it runs a first export of N new members under the same server
conditions twice, at the same time, each against its own server process (its own
account and budgets): membership as a custom property (`membership_property`, inside
the batch items: floor = batch writes / 400 per min) and as the segment tag (floor =
tag calls of 250 / 60 per min), each with its saved segment.

    python benchmarks/bench.py                    # 10k and 100k, (a) and (b)
    python benchmarks/bench.py --sizes 100000,1000000 --rate-limited 1000000
    python benchmarks/bench.py --sizes '' --membership 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = REPO / "benchmarks" / "out"

SCHEMA = {
    "type": "object",
    "properties": {
        "customer_id": {"type": ["string"]},
        "email": {"type": ["string", "null"]},
        "first_name": {"type": ["string", "null"]},
        "last_name": {"type": ["string", "null"]},
        "address": {"type": ["string", "null"]},
        "city": {"type": ["string", "null"]},
        "postal_code": {"type": ["string", "null"]},
        "country": {"type": ["string", "null"]},
        "country_code": {"type": ["string", "null"]},
        "birthdate": {"type": ["string", "null"]},
        "lifetime_value": {"type": ["number", "null"]},
        "loyalty_tier": {"type": ["string", "null"]},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def generate(path: Path, count: int, seed: int = 7) -> None:
    """N distinct profiles as Singer messages, with a STATE every 10k records."""
    rng = random.Random(seed)
    firsts = ["Anna", "Jonas", "Zoë", "José", "美咲", "Дмитрий", "محمد", "Liam", "Emma", "Noah"]
    lasts = ["Smith", "Müller", "García", "Rossi", "Kowalski", "כהן", "Okafor", "Patel"]
    with path.open("w", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {
                    "type": "SCHEMA",
                    "stream": "segment",
                    "schema": SCHEMA,
                    "key_properties": ["customer_id"],
                }
            )
            + "\n"
        )
        for n in range(count):
            record = {
                "customer_id": f"C{n}",
                "email": f"customer{n}@example.com",
                "first_name": rng.choice(firsts),
                "last_name": rng.choice(lasts),
                "address": f"{rng.randint(1, 999)} Main St",
                "city": "Vilnius",
                "postal_code": f"{rng.randint(10000, 99999)}",
                "country": "Lithuania",
                "country_code": "LT",
                "birthdate": f"19{rng.randint(50, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                "lifetime_value": round(rng.uniform(10, 9000), 2),
                "loyalty_tier": rng.choice(["gold", "platinum"]),
                "updated_at": "2026-11-01T10:00:00Z",
            }
            fh.write(
                json.dumps(
                    {"type": "RECORD", "stream": "segment", "record": record}, ensure_ascii=False
                )
                + "\n"
            )
            if (n + 1) % 10_000 == 0:
                fh.write(json.dumps({"type": "STATE", "value": {"n": n + 1}}) + "\n")


@dataclass
class Measure:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    returncode: int
    stderr: str


def measure(command: list[str], input_path: Path, env: dict[str, str] | None = None) -> Measure:
    """Run one process with the input on stdin; wall time and its own peak RSS."""
    with input_path.open("rb") as stdin, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
            cwd=OUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return Measure(
        seconds,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        os.waitstatus_to_exitcode(status),
        stderr,
    )


class ServerProcess:
    """The local Omnisend-compatible server in its own process, as Omnisend would be,
    with any of its knobs (`benchmarks/serve.py`)."""

    def __init__(self, **knobs: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "serve.py"), json.dumps(knobs)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        self.url = line.split("=", 1)[1]
        self.requests: dict[str, int] = {}

    def stop(self) -> float:
        """Stop it, keep the requests it counted, and return the CPU seconds it used
        (it shares the machine's cores)."""
        self.proc.terminate()
        tail = self.proc.stdout.read().strip()
        self.requests = json.loads(tail.splitlines()[-1]) if tail else {}
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = 0  # reaped by wait4 above
        return usage.ru_utime + usage.ru_stime


def run_target(
    input_path: Path, server: ServerProcess, label: str = "", **config: object
) -> Measure:
    # A fresh fingerprint store per run: a first export, and no benchmark sharing one.
    store = OUT / f"fingerprints-{os.getpid()}{label}.sqlite"
    for leftover in OUT.glob(f"{store.name}*"):
        leftover.unlink()
    cfg = {
        "api_key": "bench",
        "api_url": server.url,
        "rejected_records_path": str(OUT / f"rejected{label}.jsonl"),
        "fingerprint_store_path": str(store),
        **config,
    }
    cfg_path = OUT / f"bench-config{label}.json"
    cfg_path.write_text(json.dumps(cfg))
    return measure([str(BIN / "target-omnisend"), "--config", str(cfg_path)], input_path)


def summary_counts(stderr: str) -> str:
    match = re.search(r"received=\d+ delivered=\d+ rejected=\d+", stderr)
    run = re.search(
        r"\d+ requests \(\d+ retries, \d+ rate-limited\), \d+ batches, \d+ polls", stderr
    )
    return f"{match.group(0) if match else '?'}; {run.group(0) if run else '?'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument(
        "--rate-limited",
        type=int,
        default=0,
        help="also run (c) with this many records at 400 req/min",
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--order", default="oldest_first", help="(c): batch list order")
    parser.add_argument("--foreign", type=int, default=5000, help="(c): foreign batches today")
    parser.add_argument(
        "--membership",
        type=int,
        default=0,
        help="first export of this many new members: property vs tag, run concurrently",
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))

    cores = os.cpu_count() or 1
    print(
        f"{'records':>9} {'null rec/s':>11} {'omnisend rec/s':>15} {'ratio':>6} {'ratio*':>6} "
        f"{'null RSS':>9} {'omnisend RSS':>13} {'CPU us/rec null':>16} {'target':>7} "
        f"{'server':>7} {'cpu/dflt':>8} {'cpu/fast':>8} {'bound':>6} {'bound0':>6}  outcome"
    )
    for size in [int(s) for s in args.sizes.split(",") if s]:
        input_path = OUT / f"segment-{size}.singer"
        if not input_path.exists():
            generate(input_path, size)
        null = [sys.executable, str(REPO / "benchmarks" / "null_target.py")]
        floor = measure(null, input_path, env={"PYTHONPATH": str(REPO)})
        same_reader = measure(
            null,
            input_path,
            env={"PYTHONPATH": str(REPO), "NULL_TARGET_READER": "target-omnisend"},
        )
        sdk_default = measure(
            null, input_path, env={"PYTHONPATH": str(REPO), "NULL_TARGET_VALIDATOR": "default"}
        )
        server = ServerProcess()
        try:
            ours = run_target(
                input_path,
                server,
                requests_per_minute=10_000_000,
                tags_requests_per_minute=10_000_000,
                max_concurrency=args.concurrency,
                batch_poll_interval=0.05,
            )
        finally:
            server_cpu = server.stop()
        if floor.returncode or ours.returncode:
            print(floor.stderr[-2000:], ours.stderr[-2000:], file=sys.stderr)
        # The best (b)/(a) any scheduling of the same work could reach here: target and
        # server CPU spread perfectly over every core, no waiting at all.
        bound = floor.seconds / ((ours.cpu_seconds + server_cpu) / cores)
        # ... and even for a target that cost no more CPU than the floor itself.
        bound0 = floor.seconds / ((floor.cpu_seconds + server_cpu) / cores)
        print(
            f"{size:>9} {size / floor.seconds:>11,.0f} {size / ours.seconds:>15,.0f} "
            f"{floor.seconds / ours.seconds:>6.2f} {same_reader.seconds / ours.seconds:>6.2f} "
            f"{floor.peak_rss_mb:>7.0f}MB "
            f"{ours.peak_rss_mb:>11.0f}MB {floor.cpu_seconds / size * 1e6:>16.1f} "
            f"{ours.cpu_seconds / size * 1e6:>7.1f} {server_cpu / size * 1e6:>7.1f} "
            f"{ours.cpu_seconds / sdk_default.cpu_seconds:>8.2f} "
            f"{ours.cpu_seconds / floor.cpu_seconds:>8.2f} "
            f"{bound:>6.2f} {min(bound0, 1):>6.2f}  {summary_counts(ours.stderr)}",
            flush=True,
        )

    print(
        "ratio* = against a floor that reads input as target-omnisend does (msgspec); "
        "bound = the best ratio these CPU costs allow on "
        f"{cores} cores: floor time / ((target + server CPU) / {cores}); bound0 = the same "
        "for a target that needed no more CPU than the floor; cpu/dflt, cpu/fast = target "
        "CPU per record / a null SDK target's with the SDK's default validator / with the "
        "same fast validator (same run)"
    )

    if args.rate_limited:
        size = args.rate_limited
        input_path = OUT / f"segment-{size}.singer"
        if not input_path.exists():
            generate(input_path, size)
        server = ServerProcess(
            requests_per_minute=400,
            latency=[0.05, 0.15],
            batch_delay=0.2,
            batch_list_order=args.order,
            foreign_batches=args.foreign,
        )
        try:
            # Contacts only: a first run's segment tags are bound by the tags endpoint's
            # own 60/min (250 emails a call), reported separately below.
            ours = run_target(input_path, server, max_concurrency=args.concurrency, segment_tag="")
        finally:
            server.stop()
        batches = -(-size // 100)
        floor_s = batches / 400 * 60
        seen = server.requests
        writes = seen.get("batch_writes", 0) or 1
        confirm = {k: seen.get(k, 0) for k in ("list_reads", "lookups", "item_fetches")}
        shares = ", ".join(f"{k} {v:,} ({v / writes:.1%})" for k, v in confirm.items())
        print(
            f"\n(c) {size:,} records, 400 req/min (sliding window), 50-150 ms, {args.order} "
            f"list, {args.foreign:,} foreign batches: {ours.seconds / 60:.1f} min "
            f"vs rate-limit floor {floor_s / 60:.1f} min ({batches:,} batch writes / 400 per min) "
            f"= {ours.seconds / floor_s:.3f}x floor; peak RSS {ours.peak_rss_mb:.0f} MB; "
            f"target CPU {ours.cpu_seconds / size * 1e6:.1f} us/record; "
            f"server saw {seen.get('batch_writes', 0):,} batch writes, {shares} of writes, "
            f"{seen.get('rate_limited', 0):,} answered 429; "
            f"{summary_counts(ours.stderr)}; exit {ours.returncode}",
            flush=True,
        )
        if ours.returncode:
            print(ours.stderr[-3000:], file=sys.stderr)

    if args.membership:
        membership(args.membership, args)


RATE_LIMITED = {
    "requests_per_minute": 400,
    "tags_requests_per_minute": 60,
    "latency": [0.05, 0.15],
    "batch_delay": 0.2,
}


def membership(size: int, args: argparse.Namespace) -> None:
    """First export of `size` new members: property route and tag route at the same time,
    each against its own server process, each against its own floor."""
    input_path = OUT / f"segment-{size}.singer"
    if not input_path.exists():
        generate(input_path, size)
    knobs = {**RATE_LIMITED, "batch_list_order": args.order, "foreign_batches": args.foreign}
    routes = {
        # label: (target config, floor in seconds and what it counts)
        "property": ({"membership_property": "in_{stream_name}"}, -(-size // 100) / 400 * 60),
        "tag": ({}, -(-size // 250) / 60 * 60),
    }
    servers = {label: ServerProcess(**knobs) for label in routes}
    results: dict[str, Measure] = {}

    def run(label: str) -> None:
        config, _ = routes[label]
        results[label] = run_target(
            input_path, servers[label], f"-{label}", max_concurrency=args.concurrency, **config
        )

    threads = [threading.Thread(target=run, args=(label,)) for label in routes]
    started = time.strftime("%H:%M:%S")
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for label, server in servers.items():
        server.stop()
        ours, (_, floor_s) = results[label], routes[label]
        seen = server.requests
        print(
            f"\n(m) {label}: {size:,} new members, 400 req/min + tags 60/min (sliding window), "
            f"50-150 ms, {args.order} list, {args.foreign:,} foreign batches, started "
            f"{started} alongside the other route: {ours.seconds / 60:.1f} min vs floor "
            f"{floor_s / 60:.1f} min = {ours.seconds / floor_s:.3f}x floor; peak RSS "
            f"{ours.peak_rss_mb:.0f} MB; target CPU {ours.cpu_seconds / size * 1e6:.1f} "
            f"us/record; server saw {seen.get('batch_writes', 0):,} batch writes, "
            f"{seen.get('tag_calls', 0):,} tag calls, {seen.get('list_reads', 0):,} list reads, "
            f"{seen.get('lookups', 0):,} lookups, {seen.get('rate_limited', 0):,} answered 429, "
            f"{seen.get('all', 0):,} requests in all; {summary_counts(ours.stderr)}; "
            f"exit {ours.returncode}",
            flush=True,
        )
        if ours.returncode:
            print(ours.stderr[-3000:], file=sys.stderr)
        segment = re.search(r"Omnisend segment .*", ours.stderr)
        print(f"    {segment.group(0) if segment else 'no segment line'}", flush=True)


if __name__ == "__main__":
    main()
