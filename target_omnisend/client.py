"""HTTP to Omnisend: one session, auth, pacing, bounded retries, one error model.

Every call goes through `OmnisendClient.call`, so pacing and retry rules cannot be
bypassed by a new endpoint. Retrying is safe for everything we send: contact writes
are upserts keyed by email and tag writes are set operations.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import requests
import requests.auth
from requests.adapters import HTTPAdapter

from target_omnisend.api import (
    ApiGeneration,
    BatchPage,
    BatchStatus,
    ItemResult,
    SavedSegment,
    parse_batch,
    parse_item,
    problem_summary,
)
from target_omnisend.errors import (
    AmbiguousWrite,
    AuthenticationError,
    Cancelled,
    DeliveryError,
    FatalAPIError,
    MissingScope,
)
from target_omnisend.privacy import redact
from target_omnisend.ratelimit import RateLimits

USER_AGENT = "target-omnisend/0.1 (+singer-sdk)"
#: 429s are the normal shape of a rate-limited run, so they get their own, larger budget.
MAX_RATE_LIMIT_WAITS = 120


class RequestRefused(Exception):
    """Omnisend answered 4xx to a well-formed request: the payload itself is the problem."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class ClientStats:
    """What the HTTP layer did, for the run summary and the benchmark."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, status: int) -> None:
        with self.lock:
            self.requests += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1


def retry_after_seconds(response: requests.Response, payload: Any) -> float | None:
    """The wait a 429 asks for: `Retry-After` (not documented, seconds or an HTTP date)
    if present, then the problem body's `retryAfter` (documented), else None."""
    header = response.headers.get("Retry-After")
    if header is not None:
        try:
            return max(float(header), 0.0)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                when = email.utils.parsedate_to_datetime(header)
                return max(when.timestamp() - time.time(), 0.0)
    body = payload.get("retryAfter") if isinstance(payload, dict) else None
    with contextlib.suppress(TypeError, ValueError):
        if body is not None:
            return max(float(body), 0.0)
    return None


class OmnisendClient:
    """A thread-safe Omnisend API client for one account."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        generation: ApiGeneration,
        limits: RateLimits,
        timeout: float = 10.0,
        max_retries: int = 5,
        pool_size: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.root = base_url.rstrip("/") + generation.prefix
        self.generation = generation
        self.limits = limits
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stats = ClientStats()
        self.logger = logger or logging.getLogger("target-omnisend.client")
        self._api_key = api_key
        self._cancelled = threading.Event()
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        # Auth as a requests auth object: the idiomatic place, and it stops requests
        # from searching ~/.netrc on every call (measurable at millions of contacts).
        self._session.auth = _HeaderAuth(generation.auth_headers(api_key))

    def close(self) -> None:
        self._session.close()

    def cancel(self) -> None:
        """No request starts after this; threads waiting for the rate limit or a retry
        raise `Cancelled` at once."""
        self._cancelled.set()
        self.limits.cancel()

    # -- the one way out --------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        raw: bytes | None = None,
        group: str = "default",
        url: str | None = None,
        idempotent: bool = True,
        priority: bool = False,
    ) -> Any:
        """Send one request with pacing and retries; return its parsed JSON body.

        `priority` requests (confirmation reads) take the rate-limit budget before waiting
        writes. A write that is not `idempotent` is never repeated after a failure that may
        have applied it (timeout, reset, 5xx): `AmbiguousWrite` instead, so the caller can
        look first. Raises `RequestRefused` for a 4xx about the payload,
        `AuthenticationError` for a refused key, `DeliveryError` when the retry budget is
        spent or Omnisend asks for a pause longer than `max_wait`, `Cancelled` after
        `cancel()`.
        """
        target = url or f"{self.root}{path}"
        data = raw
        if body is not None:
            data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"} if data is not None else None
        limiter = self.limits[group]
        failures = 0
        rate_limit_waits = 0
        last_problem = "no attempt made"
        while True:
            stamp = limiter.acquire(priority=priority)
            response: requests.Response | None = None
            try:
                if self._cancelled.is_set():
                    raise Cancelled()
                # Never follow a redirect: it would carry the key (v5's X-API-KEY header
                # survives a change of host) and, on 307/308, the profiles elsewhere.
                response = self._session.request(
                    method,
                    target,
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                last_problem = f"{type(exc).__name__} talking to Omnisend"
                self.stats.count(0)
            else:
                self.stats.count(response.status_code)
            finally:
                limiter.answered(stamp)
            if response is not None:
                payload = _json_or_none(response)
                status = response.status_code
                if status != 429:
                    limiter.observe(response.headers)
                if 200 <= status < 300:
                    if payload is not None or method in {"DELETE"} or not response.content:
                        return payload
                    last_problem = f"HTTP {status} with a body that is not JSON"
                elif status == 429:
                    rate_limit_waits += 1
                    with self.stats.lock:
                        self.stats.rate_limited += 1
                    if rate_limit_waits > MAX_RATE_LIMIT_WAITS:
                        raise DeliveryError(
                            f"Omnisend kept answering 429 (rate limited) for {method} {path} "
                            f"after {rate_limit_waits} waits; lower requests_per_minute or "
                            "check for other integrations sharing this account"
                        )
                    limiter.pause(self._rate_limit_wait(response, payload, rate_limit_waits))
                    continue
                elif 300 <= status < 400:
                    raise FatalAPIError(
                        f"Omnisend answered {method} {path} with a redirect (HTTP {status}), "
                        "which is not followed: set api_url to the API's own address"
                    )
                elif status in (401, 403):
                    raise AuthenticationError(
                        f"Omnisend refused the API key (HTTP {status}): "
                        "check api_key and that it has access to contacts"
                    )
                elif status == 410:
                    raise FatalAPIError(
                        f"Omnisend retired API version {self.generation.name!r} (HTTP 410): "
                        "set api_version to a supported version"
                    )
                elif status >= 500 or status in (408, 409, 425):
                    last_problem = f"HTTP {status}: {problem_summary(payload, status)}"
                else:
                    raise RequestRefused(
                        status, redact(problem_summary(payload, status), self._api_key)
                    )
            if not idempotent:
                raise AmbiguousWrite(f"{method} {path}: {redact(last_problem, self._api_key)}")
            failures += 1
            if failures > self.max_retries:
                raise DeliveryError(
                    f"Omnisend did not accept {method} {path} after {failures} attempts "
                    f"(last: {redact(last_problem, self._api_key)})"
                )
            with self.stats.lock:
                self.stats.retries += 1
            delay = random.uniform(
                0, min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1))
            )
            self.logger.warning(
                "%s %s failed (%s); retry %d/%d in %.1fs",
                method,
                path,
                redact(last_problem, self._api_key),  # error bodies may echo the key
                failures,
                self.max_retries,
                delay,
            )
            if self._cancelled.wait(delay):
                raise Cancelled()

    def _rate_limit_wait(self, response: requests.Response, payload: Any, waits: int) -> float:
        """How long to pause after a 429: what the server asked for (`Retry-After`, the
        body's `retryAfter`, the window reset, in that order), else a growing backoff.
        A pause longer than `max_wait` ends the run with one line instead of a stall."""
        limiter = self.limits["default"]
        asked = retry_after_seconds(response, payload)
        if asked is None:
            asked = limiter.reset_hint(response.headers)
        if asked is None:
            # Our own guess, never longer than the user allows a pause to be.
            backoff = self.backoff_base * 2 ** min(waits, 10)
            return min(self.backoff_cap, self.limits.max_wait, backoff)
        if asked > self.limits.max_wait:
            raise DeliveryError(
                f"Omnisend asked to wait {asked:.0f} s before the next request (rate limit), "
                f"longer than max_wait ({self.limits.max_wait:.0f} s); raise max_wait or run "
                "when the account's other integrations are quieter"
            )
        return asked

    # -- endpoints --------------------------------------------------------------------

    def check_connection(self) -> None:
        """The cheapest authenticated read: fails fast on a wrong key or a wrong URL."""
        try:
            self.call("GET", "/contacts", params={"limit": 1})
        except RequestRefused as exc:
            raise FatalAPIError(
                f"Omnisend refused the connection check ({exc}); check api_url and api_version"
            ) from exc

    def encode_contact(self, body: dict[str, Any]) -> str:
        """A contact's wire JSON, made once: it is both what is sent and what the
        fingerprint store remembers (serialising twice cost a tenth of a run's CPU)."""
        contact = self.generation.contact_body(body)
        try:
            # msgspec: ~8x faster than json.dumps, same text (UTF-8, no spaces, same
            # escapes; only float exponents are spelled 1e16 rather than 1e+16).
            return _ENCODER.encode(contact).decode("utf-8")
        except (TypeError, UnicodeEncodeError):
            return json.dumps(contact, separators=(",", ":"), ensure_ascii=False)

    def create_batch(self, payloads: list[str]) -> str:
        """One batch from contacts already encoded by `encode_contact`."""
        data = batch_body(payloads).encode("utf-8")
        for _ in range(self.max_retries + 1):
            payload = self.call("POST", "/batches", raw=data)
            batch_id = payload.get("batchID") if isinstance(payload, dict) else None
            if isinstance(batch_id, str | int) and not isinstance(batch_id, bool) and batch_id:
                return str(batch_id)
            # A 2xx without a batch id cannot be confirmed; sending again is safe
            # (contact writes are upserts by email).
            self.logger.warning("Omnisend accepted a batch without a batchID; sending again")
        raise DeliveryError(
            f"Omnisend accepted batches but returned no batchID {self.max_retries + 1} times"
        )

    def get_batch(self, batch_id: str) -> BatchStatus | None:
        return parse_batch(self.call("GET", f"/batches/{batch_id}", priority=True))

    def list_batches(
        self, page: dict[str, str] | str | None, date_from: str, limit: int = 250
    ) -> BatchPage:
        """One page of today's contact batches (all statuses), from `page` (a cursor or
        URL from an earlier page) or from the start."""
        params = {"endpoint": "contacts", "dateFrom": date_from, "limit": str(limit)}
        if isinstance(page, str):
            payload = self.call("GET", "/batches", url=self._same_origin(page), priority=True)
        else:
            payload = self.call("GET", "/batches", params={**params, **(page or {})}, priority=True)
        payload = payload if isinstance(payload, dict) else {}
        raw_batches = payload.get("batches")
        raw_batches = raw_batches if isinstance(raw_batches, list) else []
        found = (parse_batch(raw) for raw in raw_batches)
        paging = payload.get("paging")
        if isinstance(paging, dict):
            offset = paging.get("offset")
            following = self.generation.next_page(payload)
        elif isinstance(page, str):  # a next-page URL answered without paging: stop here
            offset, following = None, None
        else:
            # The documented paging object is missing (a proxy or gateway may drop it):
            # the list is still offset-paged, so the next page is where this one ended.
            offset = _int(page.get("offset") if page else None, 0)
            following = (
                {"offset": str(offset + len(raw_batches))} if len(raw_batches) >= limit else None
            )
        return BatchPage(
            batches=[batch for batch in found if batch is not None],
            following=following,
            offset=offset if isinstance(offset, int) else None,
        )

    def batch_items(self, batch_id: str) -> list[ItemResult]:
        pages = self._pages(f"/batches/{batch_id}/items", "items", {"limit": 250}, priority=True)
        return [parse_item(raw) for raw in pages]

    def list_contacts(self, **filters: Any) -> Iterator[dict[str, Any]]:
        yield from self._pages("/contacts", "contacts", {"limit": 250, **filters})

    def add_tags(self, tags: list[str], emails: list[str]) -> None:
        self.call("POST", "/contacts/tags", body={"tags": tags, "emails": emails}, group="tags")

    def remove_tags(self, tags: list[str], emails: list[str]) -> None:
        self.call("DELETE", "/contacts/tags", body={"tags": tags, "emails": emails}, group="tags")

    def _pages(
        self,
        path: str,
        key: str,
        params: dict[str, Any],
        group: str = "default",
        *,
        priority: bool = False,
    ) -> Iterator[dict[str, Any]]:
        payload = _object(self.call("GET", path, params=params, group=group, priority=priority))
        seen: set[str] = set()
        while True:
            yield from _objects(payload.get(key))
            following = self.generation.next_page(payload)
            if following is None:
                return
            if repr(following) in seen:  # a server repeating a cursor would page forever
                self.logger.warning("Omnisend repeated a page cursor for %s; stopped paging", path)
                return
            seen.add(repr(following))
            if isinstance(following, str):
                url = self._same_origin(following)
                payload = _object(self.call("GET", path, url=url, group=group, priority=priority))
            else:
                query = {**params, **following}
                payload = _object(
                    self.call("GET", path, params=query, group=group, priority=priority)
                )

    # -- saved segments (2026-03-15): budgets of their own, 403 = a missing scope ------

    def segments(self) -> Iterator[SavedSegment]:
        """Every saved segment, 50 a page (the list has no name filter)."""
        with _scope("segments.read"):
            for payload in self._pages("/segments", "segments", {"limit": 50}, "segments_read"):
                segment = SavedSegment.from_wire(payload)
                if segment is not None:
                    yield segment

    def get_segment(self, segment_id: str) -> SavedSegment | None:
        """None when Omnisend no longer has it (deleted by hand)."""
        with _scope("segments.read"):
            try:
                payload = self.call("GET", f"/segments/{segment_id}", group="segments_read")
            except RequestRefused as exc:
                if exc.status in (400, 404):
                    return None
                raise
        return SavedSegment.from_wire(payload)

    def create_segment(self, body: dict[str, Any]) -> SavedSegment | None:
        """POST once: without an idempotency key a repeat could create a duplicate."""
        with _scope("segments.write"):
            payload = self.call(
                "POST", "/segments", body=body, group="segments_write", idempotent=False
            )
        return SavedSegment.from_wire(payload)

    def replace_segment(self, segment_id: str, body: dict[str, Any]) -> SavedSegment | None:
        """PUT is a full replace, safe to repeat (409 while building is retried)."""
        with _scope("segments.write"):
            payload = self.call("PUT", f"/segments/{segment_id}", body=body, group="segments_write")
        return SavedSegment.from_wire(payload)

    def segment_statistics(self, segment_id: str) -> dict[str, Any]:
        with _scope("segments.read"):
            path = f"/segments/{segment_id}/statistics"
            return self.call("GET", path, group="segments_read") or {}

    def _same_origin(self, url: str) -> str:
        """A next-page URL is followed on our own API host only: the key goes with it."""
        ours, theirs = urlsplit(self.root), urlsplit(url)
        return urlunsplit((ours.scheme, ours.netloc, theirs.path, theirs.query, ""))


_ENCODER = msgspec.json.Encoder()


@contextlib.contextmanager
def _scope(scope: str) -> Iterator[None]:
    """A 401/403 on a segments call (after the key passed the contacts check) means the
    key lacks that scope, not that the key is wrong."""
    try:
        yield
    except AuthenticationError as exc:
        raise MissingScope(scope) from exc


def batch_body(payloads: list[str]) -> str:
    """A contacts batch from contacts already encoded by `encode_contact` (no re-encoding)."""
    return '{"method":"POST","endpoint":"contacts","items":[' + ",".join(payloads) + "]}"


class _HeaderAuth(requests.auth.AuthBase):
    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.update(self._headers)
        return request

    def __repr__(self) -> str:
        return "<Omnisend API key auth>"  # never the key


def _object(payload: Any) -> dict[str, Any]:
    """A response body that should be a JSON object; anything else reads as empty."""
    return payload if isinstance(payload, dict) else {}


def _objects(value: Any) -> list[dict[str, Any]]:
    """The objects of a list a response should hold; anything else is skipped."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _json_or_none(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except (ValueError, RecursionError):  # RecursionError: a body nested thousands deep
        return None


def _int(text: Any, default: int) -> int:
    """A query parameter we sent ourselves, as a number."""
    try:
        return int(text)
    except (TypeError, ValueError):
        return default
