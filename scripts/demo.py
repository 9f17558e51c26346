"""`make demo`: the bundled sample segment -> target-omnisend -> a local
Omnisend-compatible server, then a report of what Omnisend now holds and what was
rejected and why. Nothing leaves this machine."""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from target_omnisend.privacy import mask_email
from tests.harness import (
    read_jsonl,
    run_target,
    sample_records,
    segment_messages,
    stored_email,
)
from tests.omnisend_server import OmnisendServer


def settled_members(server: OmnisendServer, segment_id: str, wait: float = 3.0) -> int:
    """The segment's statistics once the run's tag calls (asynchronous in Omnisend, and
    in the local server) have been applied: the count stops changing."""
    deadline = time.monotonic() + wait
    count = server.segment_members(segment_id)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        latest = server.segment_members(segment_id)
        if latest == count:
            return count
        count = latest
    return count


def main() -> int:
    records = sample_records()
    with OmnisendServer(api_keys=("demo-key",)) as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = {
            "api_key": "demo-key",
            "api_url": server.url,
            "rejected_records_path": str(workdir / "rejected.jsonl"),
            "custom_properties": {
                "lifetime_value": "lifetime_value",
                "loyalty_tier": "loyalty_tier",
            },
        }
        print(f"Local Omnisend-compatible server: {server.url}")
        print(f"Sending {len(records)} profiles of segment 'vip_buyers' through target-omnisend…")
        run = run_target(config, segment_messages(records), workdir=workdir)
        contacts = server.contacts()
        rejected = read_jsonl(workdir / "rejected.jsonl")
        segments = [(s, settled_members(server, s["segmentID"])) for s in server.segments()]

    print(f"\nExit code: {run.returncode}")
    print(f"Delivered to Omnisend: {len(contacts)} contacts")
    print(f"{'email':32} {'name':28} {'country':8} {'tier':9}")
    for contact in contacts[:12]:
        email = stored_email(contact)
        name = f"{contact.get('firstName', '')} {contact.get('lastName', '')}".strip()
        tier = (contact.get("customProperties") or {}).get("loyalty_tier", "")
        print(f"{mask_email(email):32} {name[:28]:28} {contact.get('countryCode', '-'):8} {tier:9}")
    if len(contacts) > 12:
        print(f"… and {len(contacts) - 12} more")
    print(f"\nRejected: {len(rejected)} records (file: rejected.jsonl)")
    for code, count in Counter(r["code"] for r in rejected).most_common():
        example = next(r["reason"] for r in rejected if r["code"] == code)
        print(f"  {count:3} x {code}: e.g. {example}")
    print("\nSaved segments in Omnisend (Audience → Segments):")
    for segment, members in segments:
        tags = [
            tag
            for group in segment["conditionGroups"]
            for condition in group["conditions"]
            for flt in condition["filters"]
            for tag in flt["value"]
        ]
        print(
            f"  '{segment['name']}' (id {segment['segmentID']}): contacts tagged any of {tags}, "
            f"{members} member(s) by its statistics"
        )
    if not segments:
        print("  none")
    print(f"\nSTATE emitted after delivery: {run.states[-1] if run.states else 'none'}")
    summary = [line for line in run.stderr.splitlines() if "Summary for stream" in line]
    for line in summary:
        print(line[line.index("Summary") :])
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
