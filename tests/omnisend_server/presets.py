"""Named combinations of the server's knobs, so a suite can run across the behaviours
Omnisend's documentation leaves open: `OmnisendServer(**PRESETS[name])`, or
`python -m tests.omnisend_server --preset NAME`. Each one keeps the knobs it does not
name at their defaults (today's behaviour); "default" is that behaviour itself.
"""

from __future__ import annotations

from typing import Any

BUSY = {"foreign_batches": 300, "foreign_batches_per_minute": 30}

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # GET /batches in another order, in an account where other integrations made
    # batches today and keep making them.
    "oldest_first_busy": {"batch_list_order": "oldest_first", **BUSY},
    "unordered_busy": {"batch_list_order": "unordered", **BUSY},
    # Rate-limit information: none at all, or Reset as a timestamp plus Retry-After.
    "no_rate_limit_headers": {"rate_limit_headers": False},
    "epoch_reset": {"rate_limit_reset": "epoch", "retry_after_header": True},
    # Per-item results that only identity can match, and counts that do not add up.
    "identity_only_items": {"items_order": "shuffled", "echo_item_request": False},
    "inconsistent_counts": {"inconsistent_batches": 0.2},
    # Segments: a slow build, statistics a moment behind the tags.
    "slow_segments": {"segment_build_seconds": 1.0, "segment_stats_lag": 1.0},
    # Everything above that still lets a correct client finish quickly.
    "hostile": {
        "batch_list_order": "unordered",
        **BUSY,
        "rate_limit_headers": False,
        "items_order": "shuffled",
        "echo_item_request": False,
        "inconsistent_batches": 0.1,
        "foreign_requests_per_minute": 60,
    },
    # Benchmark (c) of issue 13: oldest-first listing, 5,000 foreign batches today
    # (add --rpm 400 --latency 0.05,0.15 on the command line).
    "busy_account_c": {"batch_list_order": "oldest_first", "foreign_batches": 5000},
}
