"""A local Omnisend-compatible HTTP server for tests, the demo and benchmarks (stdlib only).

    with OmnisendServer(api_keys=("test-key",)) as srv:
        requests.post(f"{srv.url}/api/contacts", ...)
        srv.contacts()

Never imported by the installed target. `python -m tests.omnisend_server --help` serves
it from the command line; each keyword below has the flag named next to it.

Knobs (keyword → CLI flag; default). Where Omnisend's documentation is silent the server
can take each plausible behaviour, so a client can be tested against all of them; the
defaults are what the server always did.

Rate limits (per brand = per API key here; groups: default, tags, segments_write,
segments_read, each with a budget of its own):
- `requests_per_minute` → `--rpm` (None: unlimited), `tags_requests_per_minute` →
  `--tags-rpm`, `window_seconds` → `--window` (60; shrink it to test quickly).
- `rate_limit_window` → `--rate-limit-window` ("sliding"): "sliding" is an exact sliding
  log, as the 2026-03-15 docs describe — spending a window's budget just before and
  again just after a fixed boundary is refused; "fixed" is back-to-back windows.
- `foreign_requests_per_minute` → `--foreign-rpm` (0): another integration of the brand
  spends this many requests per window of the default group's budget, evenly spread.
- `rate_limit_headers` → `--no-rate-limit-headers` (on): send `X-Rate-Limit-*` at all
  (for 2026-03-15 Omnisend does not document them).
- `rate_limit_reset` → `--reset-as` ("seconds"): Reset as seconds left, or "epoch" (a
  Unix timestamp, ~1.8e9: a client that sleeps it literally hangs for decades).
- `retry_after_header` → `--retry-after-header` (off): a `Retry-After` header on 429s.
  The RFC 9457 body always carries `retryAfter` (seconds until one more request fits).

Batches:
- `batch_list_order` → `--batch-list-order` ("newest_first"): the order of GET /batches,
  which Omnisend does not document: "newest_first", "oldest_first", or "unordered" — a
  seeded hash of the batch id. That is the hardest plausible one: stable between calls
  (so offset paging still works, as it must on any real API), unrelated to creation time,
  and each new batch lands anywhere, shifting later pages while a client pages. (A fresh
  shuffle per call is not plausible: no client could ever page such a list.) GET /batches
  honours the documented filters: `endpoint` (required), `status`, `dateFrom`/`dateTo`
  (yyyy-mm-dd, whole UTC days of createdAt, inclusive), `offset`, `limit` (1..250,
  default 100); answer `{batches, paging: {limit, offset, next, previous}}`.
- `batch_list_paging` → `--no-batch-list-paging` (on): the `paging` object of GET
  /batches at all (documented; a proxy or gateway may drop it). Without it the list
  still honours `offset`/`limit`, but nothing says where the next page is.
- `foreign_batches` → `--foreign-batches` (0): finished contact batches another
  integration made earlier today (UTC), present before the run; every 7th has one
  failed item. `foreign_batches_per_minute` (0) adds more while the server runs;
  `foreign_batch_items` (5) items each; `foreign_batch_days` (1) spreads them over that
  many UTC days ending today instead (Omnisend keeps batches 7 days). Their contacts are
  not stored.
- `items_order` → `--items-order` ("same"): /batches/{id}/items in request order,
  "reversed", or "shuffled" (stable per batch). `echo_item_request` →
  `--no-echo-item-request` (on): without it items carry no `request` field, so results
  can only be matched by identity (a success's `response` holds the contact).
- `inconsistent_batches` → `--inconsistent-batches` (0.0): the share of batches, evenly
  spread (0.2: every 5th), that silently skip their last item yet report `finished`,
  `errorsCount: 0`, with `finishedCount < totalCount` (the skipped item stays `pending`,
  its contact unwritten). One batch at a time: `FaultRule(kind="batch_short")`.

Contacts:
- `status_ties` → `--status-ties` ("later_wins"): Omnisend keeps the email status with
  the latest `statusChangedAt` (documented: an older one leaves the status alone); a
  write dated exactly like the held status wins ("later_wins") or leaves it
  ("held_wins") — not documented, so the target must be right under both.

Segments (2026-03-15 only; v5 answers 404):
- `segment_writes_per_minute` → `--segment-writes-rpm` (15; POST/PUT) and
  `segment_reads_per_minute` → `--segment-reads-rpm` (100; GET/DELETE).
- `foreign_segment_writes_per_minute` → `--foreign-segment-writes-rpm` (0): segment
  writes per window other integrations spend from the same 15/min budget.
- `segment_build_seconds` → `--segment-build-seconds` (0.2): a segment is `building`
  that long after each write; PUT/DELETE meanwhile answer 409.
- `segment_stats_lag` → `--segment-stats-lag` (0): statistics count members by their
  tags as they were this many seconds ago (Omnisend's lag behind tag changes); custom
  properties count as they are now.
- Rules on tags (`anyOf`/`noneOf`) and on custom properties (`property: "custom"`,
  `equals`/`notEquals`) are evaluated by statistics, `GET /contacts?segmentID=` and the
  tags endpoint's `segmentID` selector.

Contacts:
- `custom_properties_update` → `--custom-properties-update` ("merge"): Omnisend does not
  document whether `customProperties` in a contact update merges with the contact's
  other custom properties ("merge": only the names sent change) or replaces them all
  ("replace": names not sent are gone).
- `api_key_scopes` → `--api-key-scopes KEY=scope,scope` (none): keys that have only
  these scopes (added as accounts of their own); segment calls without `segments.read`
  / `segments.write` get a 403 problem naming the scope (only segment calls check
  scopes). Keys not listed have every scope.
- `slow_segment_posts` → `--slow-segment-posts` (0): the first N POST /segments are
  applied, then answered only after `slow_segment_post_seconds` (11: past Omnisend's
  suggested 10 s client timeout) — the client times out, the segment exists anyway.

Presets: `presets.PRESETS` names combinations of the knobs above ("oldest_first_busy",
"hostile", "busy_account_c", …) for suites that run across them; `--preset NAME` on the
command line, `OmnisendServer(**PRESETS[name])` in Python.

Helpers for tests: `contacts()`, `contact(email)`, `batches()`, `segments()`,
`add_segment(name, tags)` (a hand-made segment, outside the API budget),
`segment_members(id)`, `request_log()`, `count(...)`, `add_fault(FaultRule(...))`,
`reset()`.
"""

from .api import RequestLogEntry
from .faults import FaultRule
from .server import OmnisendServer

__all__ = ["FaultRule", "OmnisendServer", "RequestLogEntry"]
