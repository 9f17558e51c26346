"""`python -m tests.omnisend_server --port 0 --api-key demo-key`: serve in the foreground.

Prints exactly one line, `OMNISEND_SERVER_URL=http://127.0.0.1:PORT`, so a parent
process can read the URL, then serves until SIGTERM or SIGINT.
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
