"""`python -m tests.omnisend_server --port 0 --api-key demo-key`: serve in the foreground.

Prints exactly one line, `OMNISEND_SERVER_URL=http://127.0.0.1:PORT`, so a parent
process can read the URL, then serves until SIGTERM or SIGINT. Every knob of
`OmnisendServer` has a flag (see the package docstring for what each one models);
`--preset NAME` starts from one of `presets.PRESETS`, and flags that differ from their
defaults override it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from .presets import PRESETS
from .server import OmnisendServer


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def _limit(text: str) -> int | None:
    """A per-window limit; 0 means unlimited."""
    value = int(text)
    return value or None


def _scopes(text: str) -> tuple[str, list[str]]:
    key, _, scopes = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError("expected KEY=scope,scope")
    return key, [s for s in scopes.split(",") if s]


def _parser() -> argparse.ArgumentParser:
    """Each flag's `dest` is the `OmnisendServer` keyword it sets."""
    parser = argparse.ArgumentParser(prog="python -m tests.omnisend_server", description=__doc__)
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0)
    add("--api-key", action="append", dest="api_keys", default=None)
    add("--preset", choices=sorted(PRESETS), default=None, help="start from these knobs")
    add("--rpm", dest="requests_per_minute", type=int, default=None, help="per window, per key")
    add("--tags-rpm", dest="tags_requests_per_minute", type=int, default=None)
    add("--window", dest="window_seconds", type=float, default=60.0, help="window length, s")
    add("--latency", type=_pair, default=(0.0, 0.0), help="MIN,MAX seconds")
    add("--batch-delay", type=float, default=0.0)
    add("--seed", type=int, default=0)
    add(
        "--status-ties",
        choices=("later_wins", "held_wins"),
        default="later_wins",
        help="which status stays when a write's statusChangedAt equals the held one",
    )
    limits = parser.add_argument_group("rate limits").add_argument
    limits("--rate-limit-window", choices=("sliding", "fixed"), default="sliding")
    limits(
        "--foreign-rpm",
        dest="foreign_requests_per_minute",
        type=float,
        default=0.0,
        help="requests per window other integrations spend",
    )
    limits(
        "--no-rate-limit-headers",
        dest="rate_limit_headers",
        action="store_false",
        help="send no X-Rate-Limit-* headers",
    )
    limits("--reset-as", dest="rate_limit_reset", choices=("seconds", "epoch"), default="seconds")
    limits("--retry-after-header", action="store_true", help="Retry-After on 429s")
    batches = parser.add_argument_group("batches").add_argument
    batches(
        "--batch-list-order",
        choices=("newest_first", "oldest_first", "unordered"),
        default="newest_first",
    )
    batches("--foreign-batches", type=int, default=0, help="made earlier today")
    batches("--foreign-batches-per-minute", type=float, default=0.0)
    batches("--foreign-batch-items", type=int, default=5)
    batches("--foreign-batch-days", type=int, default=1, help="spread over N UTC days to today")
    batches("--items-order", choices=("same", "reversed", "shuffled"), default="same")
    batches(
        "--no-batch-list-paging",
        dest="batch_list_paging",
        action="store_false",
        help="GET /batches without its paging object",
    )
    batches(
        "--no-echo-item-request",
        dest="echo_item_request",
        action="store_false",
        help="batch items without their `request`",
    )
    batches(
        "--inconsistent-batches",
        type=float,
        default=0.0,
        help="share of batches that skip their last item yet say finished",
    )
    segments = parser.add_argument_group("segments").add_argument
    segments(
        "--segment-writes-rpm",
        dest="segment_writes_per_minute",
        type=_limit,
        default=15,
        help="0 = unlimited",
    )
    segments(
        "--segment-reads-rpm",
        dest="segment_reads_per_minute",
        type=_limit,
        default=100,
        help="0 = unlimited",
    )
    segments(
        "--foreign-segment-writes-rpm",
        dest="foreign_segment_writes_per_minute",
        type=float,
        default=0.0,
        help="segment writes per window other integrations spend",
    )
    segments("--segment-build-seconds", type=float, default=0.2)
    segments("--segment-stats-lag", type=float, default=0.0)
    segments(
        "--api-key-scopes",
        type=_scopes,
        action="append",
        default=None,
        metavar="KEY=SCOPE,SCOPE",
        help="a key with only these scopes (e.g. demo-ro=segments.read)",
    )
    segments("--slow-segment-posts", type=int, default=0)
    segments("--slow-segment-post-seconds", type=float, default=11.0)
    parser.add_argument_group("contacts").add_argument(
        "--custom-properties-update",
        choices=("merge", "replace"),
        default="merge",
        help="what customProperties in a contact update do to the contact's other ones",
    )
    return parser


def knobs(argv: list[str] | None = None) -> dict[str, Any]:
    """The `OmnisendServer` keywords the command line asks for."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    preset = PRESETS[args.pop("preset")] if args.get("preset") else {}
    chosen = {k: v for k, v in args.items() if v != parser.get_default(k)}
    out = {**args, **preset, **chosen}
    out["api_keys"] = tuple(out["api_keys"] or ["test-key"])
    out["api_key_scopes"] = dict(out["api_key_scopes"] or [])
    out.pop("preset", None)
    return out


def main(argv: list[str] | None = None) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = OmnisendServer(**knobs(argv)).start()
    print(f"OMNISEND_SERVER_URL={server.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
