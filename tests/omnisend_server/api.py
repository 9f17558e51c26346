"""The request pipeline: version root, auth, rate limit, version header, faults, route.

Transport-free: `Api.handle` turns a `Request` into a `Reply` (or a connection reset),
and logs it. The HTTP handler only moves bytes, so the pipeline's order — which
decides which error a client sees first — is all here. `Headers` says how rate-limit
information goes out (Omnisend documents the `X-Rate-Limit-*` headers only for v3/v5).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .endpoints import NO_BODY, Call, Result
from .errors import ApiError
from .faults import REQUEST_KINDS, FaultBook, FaultRule
from .ratelimit import Quota, RateLimiter
from .store import Account, Store
from .wire import LATEST, RETIRED_VERSIONS, SUPPORTED_VERSION, Generation, render_error, split_path

MAX_BODY_BYTES = 1_000_000  # "keep each payload < 1 MB": 1 MB and more is refused
MALFORMED_BODY = "<html><body><h1>502 Bad Gateway</h1>oops</body></html>"


@dataclass(frozen=True)
class RequestLogEntry:
    """One handled request. `path` is relative to the version root ('/batches/…');
    `status` is 0 when the connection was reset instead of answered."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    group: str
    api_version: str


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    base_url: str
    too_large: bool = False


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False


@dataclass(frozen=True)
class Headers:
    """`rate_limit`: send X-Rate-Limit-*; `reset_style`: Reset as "seconds" left or as an
    "epoch" timestamp; `retry_after`: add a `Retry-After` header (seconds) to 429s."""

    rate_limit: bool = True
    reset_style: str = "seconds"
    retry_after: bool = False

    def quota(self, quota: Quota) -> dict[str, str]:
        return quota.headers(self.reset_style) if self.rate_limit else {}


Routes = list[tuple[str, dict[str, Callable[[Call], Result]]]]


def group_of(rel: str, method: str) -> str:
    """The limiter group: tags and segments have limits of their own at Omnisend."""
    if rel.startswith("/contacts/tags"):
        return "tags"
    if rel == "/segments" or rel.startswith("/segments/"):
        return "segments_write" if method in ("POST", "PUT") else "segments_read"
    return "default"


def json_reply(status: int, payload: Any, content_type: str = "application/json") -> Reply:
    if payload is NO_BODY:
        return Reply(status, b"", None)
    return Reply(status, json.dumps(payload, ensure_ascii=False).encode(), content_type)


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")


class Api:
    def __init__(
        self,
        store: Store,
        faults: FaultBook,
        limiter: RateLimiter,
        routes: Routes,
        headers: Headers | None = None,
    ) -> None:
        self.store = store
        self.faults = faults
        self.limiter = limiter
        self.headers = headers or Headers()
        self.routes = [(_compile(p), methods) for p, methods in routes]
        self.log: list[RequestLogEntry] = []
        self.log_lock = threading.Lock()

    def handle(self, req: Request) -> Reply:
        gen, rel = split_path(req.path)
        group = group_of(rel, req.method) if gen is LATEST else "default"
        try:
            reply = self._handle(req, gen, rel, group)
        except ApiError as error:  # refusals before the rate limiter: no quota headers
            reply = self._error(error, gen, req.path)
        entry = RequestLogEntry(
            req.method,
            rel,
            dict(req.query),
            0 if reply.reset else reply.status,
            group,
            gen.name if gen else "",
        )
        with self.log_lock:
            self.log.append(entry)
        return reply

    def _error(self, error: ApiError, gen: Generation | None, instance: str) -> Reply:
        v5 = gen is not None and gen.is_v5
        reply = json_reply(
            error.status,
            render_error(error, gen, instance),
            "application/json" if v5 else "application/problem+json",
        )
        reply.headers.update(error.headers)
        return reply

    def _authenticate(self, gen: Generation, headers: Mapping[str, str]) -> Account:
        if gen.is_v5:
            key = headers.get("X-API-KEY") or ""
        else:
            scheme, _, key = (headers.get("Authorization") or "").strip().partition(" ")
            key = key.strip() if scheme == "Omnisend-API-Key" else ""
        account = self.store.accounts.get(key) if key else None
        if account is None:
            where = "X-API-KEY" if gen.is_v5 else "Authorization: Omnisend-API-Key <key>"
            raise ApiError(401, f"Missing or invalid API key (send {where})", slug="unauthorized")
        return account

    def _handle(self, req: Request, gen: Generation | None, rel: str, group: str) -> Reply:
        if gen is None:
            raise ApiError(404, f"No API at {req.path}; use /api or /v5", slug="not-found")
        account = self._authenticate(gen, req.headers)
        quota = self.limiter.hit(account.key, group)
        try:
            reply = self._authorised(req, gen, rel, account, quota, group)
        except ApiError as error:
            reply = self._error(error, gen, req.path)
        reply.headers = {**self.headers.quota(quota), **reply.headers}
        return reply

    def _authorised(
        self, req: Request, gen: Generation, rel: str, account: Account, quota: Quota, group: str
    ) -> Reply:
        if not quota.allowed:
            raise self._too_many(quota)
        if not gen.is_v5:
            version = req.headers.get("Omnisend-Version")
            if version in RETIRED_VERSIONS:
                raise ApiError(
                    410, f"API version {version} is retired; use {SUPPORTED_VERSION}", slug="gone"
                )
            if version != SUPPORTED_VERSION:
                raise ApiError(
                    400,
                    f"Missing or unknown Omnisend-Version header; use {SUPPORTED_VERSION}",
                    slug="invalid-version",
                )
        if req.too_large or len(req.body) >= MAX_BODY_BYTES:
            raise ApiError(413, "The request body must be smaller than 1 MB", slug="too-large")
        rule = self.faults.match(REQUEST_KINDS, req.method, rel)
        if rule is not None and rule.kind == "delay":
            if rule.apply:  # done, but answered only after the client's timeout
                reply = self._route(req, gen, rel, account)
                time.sleep(rule.seconds)
                return reply
            time.sleep(rule.seconds)
            rule = None
        if rule is not None and rule.kind == "status":
            return self._fault_reply(rule, gen, req.path)
        if rule is not None and rule.kind == "rate_limit":
            exhausted = self.limiter.exhausted(account.key, group)
            error = self._too_many(exhausted)
            reply = self._error(error, gen, req.path)
            reply.headers = {
                **reply.headers,
                **self.headers.quota(exhausted),
                **(rule.headers or {}),
            }
            return reply
        if rule is not None and not rule.apply:  # reset / malformed before applying
            return self._broken(rule)
        reply = self._route(req, gen, rel, account)
        return self._broken(rule) if rule is not None else reply

    def _too_many(self, quota: Quota) -> ApiError:
        error = ApiError(
            429,
            f"Rate limit of {quota.limit} requests per window exceeded; "
            f"retry in {quota.retry_after} s",
            slug="rate-limit-exceeded",
            extra={"retryAfter": quota.retry_after},
        )
        if self.headers.retry_after:
            error.headers["Retry-After"] = str(quota.retry_after)
        return error

    def _fault_reply(self, rule: FaultRule, gen: Generation, instance: str) -> Reply:
        status = rule.effective_status
        if rule.body is None:
            error = ApiError(status, f"Injected fault: HTTP {status}", slug="injected-fault")
            reply = self._error(error, gen, instance)
        elif isinstance(rule.body, bytes | str):
            raw = rule.body.encode() if isinstance(rule.body, str) else rule.body
            reply = Reply(status, raw, "application/json" if _is_json(raw) else "text/plain")
        else:
            reply = json_reply(status, rule.body)
        reply.headers.update(rule.headers or {})
        return reply

    @staticmethod
    def _broken(rule: FaultRule) -> Reply:
        if rule.kind == "reset":
            return Reply(0, reset=True)
        body = rule.body if isinstance(rule.body, str | bytes) else MALFORMED_BODY
        raw = body.encode() if isinstance(body, str) else body
        return Reply(rule.effective_status, raw, "text/html", dict(rule.headers or {}))

    def _route(self, req: Request, gen: Generation, rel: str, account: Account) -> Reply:
        if gen.is_v5 and (rel.startswith("/contacts/tags") or rel.startswith("/segments")):
            raise ApiError(
                404, "No such endpoint in v5 (tags and segments need 2026-03-15)", slug="not-found"
            )
        for pattern, methods in self.routes:
            match = pattern.match(rel)
            if match is None:
                continue
            handler: Callable[[Call], Result] | None = methods.get(req.method)
            if handler is None:
                error = ApiError(405, f"{req.method} is not allowed on {req.path}")
                error.headers["Allow"] = ", ".join(methods)
                raise error
            call = Call(
                gen, account, req.method, rel, req.query, req.body, req.base_url, match.groupdict()
            )
            status, payload = handler(call)
            return json_reply(status, payload)
        raise ApiError(404, f"No such endpoint: {req.method} {req.path}", slug="not-found")


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True
