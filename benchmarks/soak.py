"""Soak: N records through target-omnisend and a local Omnisend that misbehaves at random.

    python benchmarks/soak.py                          # 20,000 records, faults at 2%
    python benchmarks/soak.py --records 1000000        # the full soak (see below)
    python benchmarks/soak.py --fault-rate 0.05 --json # harsher; one JSON line at the end

What it does
  * Starts the local Omnisend-compatible server (tests/omnisend_server) in a process of
    its own. `python -m tests.omnisend_server` has no flags for faults, so this script
    re-runs itself with `--serve`: the same server class, plus FaultRules that fire at
    random (FaultRule.probability, seeded): 5xx, 429, connection resets before and after
    the write was applied, non-JSON bodies, responses slower than the client timeout,
    batches that end `stopped`, batches that stay `inProgress`, and a fixed 1% of
    contacts that Omnisend refuses (emails ending in 37).
  * Streams N generated records into `target-omnisend` (a STATE every 1,000 records;
    0.5% invalid emails, 0.4% duplicates that differ by case), nothing held in memory.
  * Checks ZERO LOSS: every input record is either stored by the server (its normalised
    email, read back through GET /contacts) or in the rejected file — and none is in
    both; the run exits 0, its last STATE covers all N records, its counters reconcile
    (received = delivered + rejected + merged + unchanged) and every stored contact has
    the segment tag.
  * Prints records, faults fired per kind, loss, peak RSS of the target (os.wait4) and
    wall time. Exit status 0 only if every check holds.

The full soak: `--records 1000000` took 4 min 51 s for the target (+ ~1.5 min reading
the server back) on 2 shared cores, without a rate limit: 1,493 random faults, 10,284
refusals, 13 contacts rejected as delivery_failed, zero loss, target peak RSS 87 MB.
Add `--rpm 400` for Omnisend's real limit (at least 25 minutes). The server keeps every
contact and batch in memory (~3 GB at 1M); the target's RSS stays flat.
`batch_stuck` fires at a tenth of the base rate: a batch stuck twice in a row ends the
run by design (re-sent once, then the run fails), which at 2% x 2% over 10,000 batches
would be expected about 4 times per million records.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "soak-key"
STREAM = "soak"
STATE_EVERY = 1000
SCHEMA = {
    "type": "SCHEMA",
    "stream": STREAM,
    "schema": {
        "type": "object",
        "properties": {
            "i": {"type": "integer"},
            "email": {"type": ["string", "null"]},
            "first_name": {"type": ["string", "null"]},
            "last_name": {"type": ["string", "null"]},
            "city": {"type": ["string", "null"]},
            "lifetime_value": {"type": ["number", "null"]},
        },
    },
    "key_properties": ["i"],
}
FIRSTS = ["Anna", "Jonas", "Zoë", "José", "美咲", "Дмитрий", "محمد", "Liam", "יעל", "Noah"]
REFUSED = re.compile(r"37@example\.com$")  # Omnisend refuses these contacts


# -- the input ---------------------------------------------------------------------------


def raw_email(i: int) -> str:
    if i % 200 == 199:
        return f"soak{i:07d}@invalid"  # no top-level domain: rejected by the target
    if i % 250 == 125:
        return f"  SOAK{i - 1:07d}@Example.COM "  # the previous contact again
    return f"soak{i:07d}@example.com"


def normalised(i: int) -> str:
    return raw_email(i).strip().lower()


def input_lines(n: int) -> Any:
    yield json.dumps(SCHEMA) + "\n"
    for i in range(n):
        record = {
            "i": i,
            "email": raw_email(i),
            "first_name": FIRSTS[i % len(FIRSTS)],
            "last_name": f"Family{i % 997}",
            "city": "Vilnius",
            "lifetime_value": round(i * 0.37 % 9000, 2),
        }
        yield json.dumps({"type": "RECORD", "stream": STREAM, "record": record}) + "\n"
        if (i + 1) % STATE_EVERY == 0 or i + 1 == n:
            state = {"bookmarks": {STREAM: {"offset": i + 1}}}
            yield json.dumps({"type": "STATE", "value": state}) + "\n"


# -- the faulty server, in its own process ----------------------------------------------


def fault_rules(rate: float, client_timeout: float) -> list[Any]:
    from tests.omnisend_server import FaultRule

    half, quarter = rate / 2, rate / 4
    slow = client_timeout + 0.5
    return [
        # Not random: the same contacts are refused every time, as Omnisend would.
        FaultRule(kind="item_error", email_pattern=REFUSED.pattern, status=422),
        FaultRule(kind="batch_stopped", probability=rate),
        FaultRule(kind="batch_stuck", probability=rate / 10),
        FaultRule(method="POST", path="/batches", kind="status", status=503, probability=rate),
        FaultRule(
            method="POST",
            path="/batches",
            kind="rate_limit",
            probability=half,
            headers={"Retry-After": "0.05"},
        ),
        FaultRule(method="POST", path="/batches", kind="reset", probability=half),
        FaultRule(method="POST", path="/batches", kind="reset", apply=True, probability=half),
        FaultRule(method="POST", path="/batches", kind="malformed", apply=True, probability=half),
        FaultRule(method="POST", path="/batches", kind="delay", seconds=slow, probability=quarter),
        FaultRule(method="GET", path="/batches", kind="status", status=502, probability=rate),
        FaultRule(method="GET", path="/batches", kind="malformed", probability=half),
        FaultRule(method="GET", path="/batches", kind="reset", probability=half),
        FaultRule(method="POST", path="/contacts/tags", kind="status", probability=rate),
        FaultRule(method="POST", path="/contacts/tags", kind="reset", apply=True, probability=half),
    ]


def describe(rule: Any) -> str:
    where = f"{rule.method or ''} {rule.path or ''}".strip()
    detail = rule.effective_status if rule.kind == "status" else ("applied" if rule.apply else "")
    return " ".join(str(p) for p in (rule.kind, detail, where) if p)


def serve(args: argparse.Namespace) -> int:
    """Child process: the server with faults; prints its URL, then (on SIGTERM) what
    fired, as one JSON line."""
    sys.path.insert(0, str(REPO))
    from tests.omnisend_server import OmnisendServer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = OmnisendServer(
        api_keys=(KEY,),
        requests_per_minute=args.rpm,
        latency=(0.0, 0.005),
        batch_delay=0.05,
        seed=args.seed,
    ).start()
    for rule in fault_rules(args.fault_rate, args.request_timeout):
        server.add_fault(rule)
    print(f"OMNISEND_SERVER_URL={server.url}", flush=True)
    while not stop.wait(0.2):
        pass
    fired = [[describe(rule), count] for rule, count in server.fault_hits()]
    print(json.dumps({"fired": fired, "requests": len(server.request_log())}), flush=True)
    server.stop()
    return 0


# -- reading the server back ------------------------------------------------------------


def page_emails(url: str, **query: str) -> set[str]:
    """Every stored contact's email (paging with the 2026-03-15 cursor)."""
    import requests

    headers = {"Authorization": f"Omnisend-API-Key {KEY}", "Omnisend-Version": "2026-03-15"}
    emails: set[str] = set()
    params: dict[str, str] = {"limit": "250", **query}
    with requests.Session() as session:
        while True:
            reply = session.get(f"{url}/api/contacts", params=params, headers=headers, timeout=60)
            reply.raise_for_status()
            payload = reply.json()
            for contact in payload["contacts"]:
                emails.update(i["id"] for i in contact["identifiers"] if i["type"] == "email")
            paging = payload.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("hasMore") or not after:
                return emails
            params = {**params, "after": after}


# -- the soak ---------------------------------------------------------------------------


def soak(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", *server_flags(args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip().split("=", 1)[1]
    config = {
        "api_key": KEY,
        "api_url": url,
        "rejected_records_path": str(workdir / "rejected.jsonl"),
        "summary_path": str(workdir / "summary.json"),
        "fingerprint_store_path": str(workdir / "fingerprints.sqlite"),
        "segment_tag": "segment:{stream_name}",
        "request_timeout": args.request_timeout,
        "max_retries": 8,
        "batch_timeout": 5,
        "batch_poll_interval": 0.1,
        "requests_per_minute": args.rpm or 1_000_000,
        "tags_requests_per_minute": args.rpm or 1_000_000,
    }
    (workdir / "config.json").write_text(json.dumps(config))
    started = time.perf_counter()
    with (workdir / "stderr.log").open("wb") as err:
        target = subprocess.Popen(
            [str(BIN / "target-omnisend"), "--config", str(workdir / "config.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=workdir,
        )
        assert target.stdin is not None and target.stdout is not None
        stdin, stdout = target.stdin, target.stdout
        states: list[str] = []

        def feed() -> None:
            try:
                buffer: list[str] = []
                for line in input_lines(args.records):
                    buffer.append(line)
                    if len(buffer) >= 500:
                        stdin.write("".join(buffer).encode())
                        buffer.clear()
                stdin.write("".join(buffer).encode())
            except (BrokenPipeError, OSError):
                pass  # the target stopped reading: its exit status tells why
            finally:
                with contextlib.suppress(OSError):
                    stdin.close()

        def read_states() -> None:
            states.extend(line.decode().strip() for line in stdout if line.strip())

        threads = [threading.Thread(target=feed), threading.Thread(target=read_states)]
        for thread in threads:
            thread.start()
        _, status, usage = os.wait4(target.pid, 0)
        seconds = time.perf_counter() - started
        for thread in threads:
            thread.join()
    returncode = os.waitstatus_to_exitcode(status)
    time.sleep(0.5)  # tag writes are applied asynchronously, like Omnisend's
    stored = page_emails(url)
    tagged = page_emails(url, tag=f"segment:{STREAM}")
    server.send_signal(signal.SIGTERM)
    server_report = json.loads(server.stdout.readline() or "{}")
    server.wait(timeout=60)

    rejected: dict[int, str] = {}
    rejected_twice = 0
    rejected_path = workdir / "rejected.jsonl"
    if rejected_path.exists():
        with rejected_path.open(encoding="utf-8") as fh:
            for line in fh:
                entry = json.loads(line)
                i = entry["record"]["i"]
                rejected_twice += i in rejected
                rejected[i] = entry["code"]
    lost = [i for i in range(args.records) if normalised(i) not in stored and i not in rejected]
    both = [i for i in rejected if normalised(i) in stored]
    try:
        counts = json.loads((workdir / "summary.json").read_text())["streams"][STREAM]
    except (OSError, ValueError, KeyError):
        counts = {}
    last_state = json.loads(states[-1]) if states else None
    inputs = {normalised(i) for i in range(args.records)}
    reconciled = (
        bool(counts)
        and counts["received"] == args.records
        and (
            counts["delivered"]
            + counts["rejected"]
            + counts["merged_duplicates"]
            + counts["unchanged"]
            == counts["received"]
        )
    )
    stderr_tail = (workdir / "stderr.log").read_text("utf-8", "replace")[-1500:]
    result = {
        "records": args.records,
        "fault_rate": args.fault_rate,
        "returncode": returncode,
        "seconds": round(seconds, 1),
        "records_per_second": round(args.records / seconds) if seconds else None,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "distinct_input_emails": len(inputs),
        "stored": len(stored & inputs),
        "stored_not_in_input": len(stored - inputs),
        "tagged": len(tagged),
        "rejected": len(rejected),
        "rejected_by_code": _count(rejected.values()),
        "lost": len(lost),
        "lost_sample": lost[:10],
        "stored_and_rejected": len(both),
        "rejected_twice": rejected_twice,
        "counters": {k: v for k, v in counts.items() if k != "warnings"},
        "counters_reconcile": reconciled,
        "states": len(states),
        "last_state_offset": (last_state or {}).get("bookmarks", {}).get(STREAM, {}).get("offset"),
        "faults_fired": {name: n for name, n in server_report.get("fired", []) if n},
        "faults_fired_total": sum(n for _, n in server_report.get("fired", [])),
        "random_faults_fired": sum(
            n for name, n in server_report.get("fired", []) if not name.startswith("item_error")
        ),
        "server_requests": server_report.get("requests"),
        "workdir": str(workdir),
    }
    result["ok"] = (
        returncode == 0
        and not lost
        and not both
        and not rejected_twice
        and reconciled
        and result["last_state_offset"] == args.records
        and stored <= inputs
        and tagged == stored
    )
    if not result["ok"]:
        result["stderr_tail"] = stderr_tail
    return result


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items()))


def server_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--fault-rate", str(args.fault_rate), "--seed", str(args.seed)]
    flags += ["--request-timeout", str(args.request_timeout)]
    return flags + (["--rpm", str(args.rpm)] if args.rpm else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument(
        "--fault-rate", type=float, default=0.02, help="base probability of each fault (0.01-0.05)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rpm", type=int, default=None, help="server rate limit (e.g. 400)")
    parser.add_argument("--request-timeout", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args)

    result = soak(args)
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        r = result
        rows = [
            ("records", f"{r['records']:,} ({r['distinct_input_emails']:,} distinct emails)"),
            (
                "random faults injected",
                f"{r['random_faults_fired']:,} (rate {args.fault_rate:.0%})",
            ),
            *((f"  {name}", f"{n:,}") for name, n in r["faults_fired"].items()),
            ("stored / tagged", f"{r['stored']:,} / {r['tagged']:,}"),
            ("rejected", f"{r['rejected']:,} {r['rejected_by_code']}"),
            ("loss", f"{r['lost']} (stored and rejected: {r['stored_and_rejected']})"),
            ("counters", f"{r['counters']} reconcile={r['counters_reconcile']}"),
            ("STATE", f"{r['states']} emitted, last offset {r['last_state_offset']}"),
            ("peak RSS (target)", f"{r['peak_rss_mb']} MB"),
            ("time", f"{r['seconds']} s ({r['records_per_second']} records/s)"),
            ("result", f"{'OK: zero loss' if r['ok'] else 'FAILED'} ({r['workdir']})"),
        ]
        for name, value in rows:
            print(f"{name:<28} {value}")
        if not result["ok"]:
            print(result.get("stderr_tail", ""))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
