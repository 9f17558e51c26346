"""`python -m tests.omnisend_server --port 0 --api-key demo-key`: serve in the foreground.

Prints exactly one line, `OMNISEND_SERVER_URL=http://127.0.0.1:PORT`, so a parent
process can read the URL, then serves until SIGTERM or SIGINT. Every knob of
`OmnisendServer` has a flag (see the package docstring for what each one models).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.omnisend_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", action="append", dest="api_keys", default=None)
    parser.add_argument("--rpm", type=int, default=None, help="requests per window per account")
    parser.add_argument("--tags-rpm", type=int, default=None, help="limit for /contacts/tags")
    parser.add_argument("--window", type=float, default=60.0, help="window length in seconds")
    parser.add_argument("--latency", type=_pair, default=(0.0, 0.0), help="MIN,MAX seconds")
    parser.add_argument("--batch-delay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    limits = parser.add_argument_group("rate limits")
    limits.add_argument("--rate-limit-window", choices=("sliding", "fixed"), default="sliding")
    limits.add_argument(
        "--foreign-rpm", type=float, default=0.0, help="requests per window other tools spend"
    )
    limits.add_argument(
        "--no-rate-limit-headers",
        dest="rate_limit_headers",
        action="store_false",
        help="send no X-Rate-Limit-* headers",
    )
    limits.add_argument("--reset-as", choices=("seconds", "epoch"), default="seconds")
    limits.add_argument("--retry-after-header", action="store_true", help="Retry-After on 429s")
    batches = parser.add_argument_group("batches")
    batches.add_argument(
        "--batch-list-order",
        choices=("newest_first", "oldest_first", "unordered"),
        default="newest_first",
    )
    batches.add_argument("--foreign-batches", type=int, default=0, help="made earlier today")
    batches.add_argument("--foreign-batches-per-minute", type=float, default=0.0)
    batches.add_argument("--foreign-batch-items", type=int, default=5)
    batches.add_argument("--items-order", choices=("same", "reversed", "shuffled"), default="same")
    batches.add_argument(
        "--no-echo-item-request",
        dest="echo_item_request",
        action="store_false",
        help="batch items without their `request`",
    )
    batches.add_argument(
        "--inconsistent-batches",
        type=float,
        default=0.0,
        help="share of batches that skip their last item yet say finished",
    )
    segments = parser.add_argument_group("segments")
    segments.add_argument("--segment-writes-rpm", type=_limit, default=15, help="0 = unlimited")
    segments.add_argument("--segment-reads-rpm", type=_limit, default=100, help="0 = unlimited")
    segments.add_argument("--segment-build-seconds", type=float, default=0.2)
    segments.add_argument("--segment-stats-lag", type=float, default=0.0)
    segments.add_argument(
        "--api-key-scopes",
        type=_scopes,
        action="append",
        default=[],
        metavar="KEY=SCOPE,SCOPE",
        help="a key with only these scopes (e.g. demo-ro=segments.read)",
    )
    segments.add_argument("--slow-segment-posts", type=int, default=0)
    segments.add_argument("--slow-segment-post-seconds", type=float, default=11.0)
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = OmnisendServer(
        api_keys=tuple(args.api_keys or ["test-key"]),
        requests_per_minute=args.rpm,
        tags_requests_per_minute=args.tags_rpm,
        window_seconds=args.window,
        latency=args.latency,
        batch_delay=args.batch_delay,
        seed=args.seed,
        host=args.host,
        port=args.port,
        rate_limit_window=args.rate_limit_window,
        foreign_requests_per_minute=args.foreign_rpm,
        rate_limit_headers=args.rate_limit_headers,
        rate_limit_reset=args.reset_as,
        retry_after_header=args.retry_after_header,
        batch_list_order=args.batch_list_order,
        foreign_batches=args.foreign_batches,
        foreign_batches_per_minute=args.foreign_batches_per_minute,
        foreign_batch_items=args.foreign_batch_items,
        items_order=args.items_order,
        echo_item_request=args.echo_item_request,
        inconsistent_batches=args.inconsistent_batches,
        segment_writes_per_minute=args.segment_writes_rpm,
        segment_reads_per_minute=args.segment_reads_rpm,
        segment_build_seconds=args.segment_build_seconds,
        segment_stats_lag=args.segment_stats_lag,
        api_key_scopes=dict(args.api_key_scopes),
        slow_segment_posts=args.slow_segment_posts,
        slow_segment_post_seconds=args.slow_segment_post_seconds,
    ).start()
    print(f"OMNISEND_SERVER_URL={server.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
