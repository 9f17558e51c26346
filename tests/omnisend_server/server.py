"""The HTTP side: a threading stdlib server around `Api`, and the `OmnisendServer` facade.

Keep-alive (HTTP/1.1) like the real API, so clients' connection pooling is exercised;
`stop()` closes idle keep-alive connections too, so a stopped server really is gone.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .api import Api, Headers, Reply, Request, RequestLogEntry
from .endpoints import Service
from .faults import FaultBook, FaultRule
from .foreign import ForeignBatches
from .ratelimit import RESET_STYLES, RateLimiter
from .rules import validate_segment
from .scheduler import Scheduler
from .segments import SegmentService, render_segment, tag_rule
from .store import Contact, Store
from .wire import LATEST, render_batch, render_contact

HARD_BODY_CAP = 32 * 1024 * 1024  # beyond this the body is not even read


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OmnisendLocal/1.0"
    timeout = 60  # idle keep-alive connections give their thread back eventually
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms stall
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is the record."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = do_GET

    def _read_body(self) -> tuple[bytes, bool]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks), False
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > HARD_BODY_CAP:
            self.close_connection = True
            return b"", True
        return self.rfile.read(length), False

    def _serve(self) -> None:
        owner = self.server.owner
        try:
            body, too_large = self._read_body()
        except ValueError:
            self.send_error(400, "Bad request framing")
            return
        parts = urlsplit(self.path)
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        request = Request(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=self.headers,  # type: ignore[arg-type]  # case-insensitive Message
            body=body,
            base_url=f"http://{host}",
            too_large=too_large,
        )
        reply = owner._api.handle(request)
        owner._sleep_latency()
        if reply.reset:
            self._reset()
        else:
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            if reply.content_type:
                self.send_header("Content-Type", f"{reply.content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. its timeout fired during a delay fault)
            self.close_connection = True

    def _reset(self) -> None:
        """Drop the connection without a response (RST where the OS allows)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: OmnisendServer


class OmnisendServer:
    """A local Omnisend-compatible API (2026-03-15 under /api, v5 under /v5).

    In-memory, one account (brand) per API key, asynchronous batches, saved segments,
    rate limits with Omnisend's headers, and scriptable faults. `start()` binds an
    ephemeral port. Every keyword is documented in the package docstring; each one that
    Omnisend's documentation leaves open defaults to what this server always did.
    """

    def __init__(
        self,
        api_keys: tuple[str, ...] | list[str] = ("test-key",),
        requests_per_minute: int | None = None,
        tags_requests_per_minute: int | None = None,
        window_seconds: float = 60.0,
        latency: tuple[float, float] = (0.0, 0.0),
        batch_delay: float = 0.0,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate_limit_window: str = "sliding",
        foreign_requests_per_minute: float = 0.0,
        rate_limit_headers: bool = True,
        rate_limit_reset: str = "seconds",
        retry_after_header: bool = False,
        batch_list_order: str = "newest_first",
        foreign_batches: int = 0,
        foreign_batches_per_minute: float = 0.0,
        foreign_batch_items: int = 5,
        foreign_batch_days: int = 1,
        items_order: str = "same",
        echo_item_request: bool = True,
        inconsistent_batches: float = 0.0,
        batch_list_paging: bool = True,
        segment_writes_per_minute: int | None = 15,
        segment_reads_per_minute: int | None = 100,
        foreign_segment_writes_per_minute: float = 0.0,
        segment_build_seconds: float = 0.2,
        segment_stats_lag: float = 0.0,
        api_key_scopes: Mapping[str, Iterable[str]] | None = None,
        slow_segment_posts: int = 0,
        slow_segment_post_seconds: float = 11.0,
        status_ties: str = "later_wins",
        custom_properties_update: str = "merge",
    ) -> None:
        scopes = {key: frozenset(granted) for key, granted in (api_key_scopes or {}).items()}
        keys = tuple(dict.fromkeys([*api_keys, *scopes]))
        if not keys:
            raise ValueError("at least one API key is needed")
        if rate_limit_reset not in RESET_STYLES:
            raise ValueError(f"rate_limit_reset must be one of {RESET_STYLES}")
        if not 0.0 <= inconsistent_batches <= 1.0:
            raise ValueError("inconsistent_batches must be within 0..1")
        self.host, self.port = host, port
        self.latency = (float(latency[0]), float(latency[1]))
        self._latency_rng = random.Random(seed + 1)
        self._latency_lock = threading.Lock()
        self._store = Store(
            keys,
            seed,
            tag_history_seconds=segment_stats_lag,
            status_ties=status_ties,
            custom_properties_update=custom_properties_update,
        )
        self._faults = FaultBook(seed)
        self._standing = self._standing_faults(slow_segment_posts, slow_segment_post_seconds)
        self._limiter = RateLimiter(
            {
                "default": requests_per_minute,
                "tags": tags_requests_per_minute,
                "segments_write": segment_writes_per_minute,
                "segments_read": segment_reads_per_minute,
            },
            window_seconds,
            kind=rate_limit_window,
            foreign={
                "default": foreign_requests_per_minute,
                "segments_write": foreign_segment_writes_per_minute,
            },
        )
        self._scheduler = Scheduler()
        self._service = Service(
            self._store,
            self._faults,
            self._scheduler,
            batch_delay,
            batch_list_order=batch_list_order,
            items_order=items_order,
            echo_item_request=echo_item_request,
            batch_list_paging=batch_list_paging,
            inconsistent_batches=inconsistent_batches,
        )
        self._segments = SegmentService(
            self._store, segment_build_seconds, segment_stats_lag, scopes
        )
        self._foreign = ForeignBatches(
            self._store,
            self._scheduler,
            count=foreign_batches,
            per_minute=foreign_batches_per_minute,
            items=foreign_batch_items,
            batch_delay=batch_delay,
            days=foreign_batch_days,
        )
        self._api = Api(
            self._store,
            self._faults,
            self._limiter,
            self._service.routes() + self._segments.routes(),
            Headers(rate_limit_headers, rate_limit_reset, retry_after_header),
        )
        self.clear_faults()
        self._foreign.seed()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    @staticmethod
    def _standing_faults(slow_posts: int, slow_seconds: float) -> list[FaultRule]:
        """Knobs that are faults underneath; they survive `reset()` (they are the server's
        character, not a test's script)."""
        if slow_posts <= 0:
            return []
        return [
            FaultRule(
                method="POST",
                path="/segments",
                kind="delay",
                seconds=slow_seconds,
                apply=True,
                times=slow_posts,
            )
        ]

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> OmnisendServer:
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._scheduler.start()
        self._foreign.start_trickle()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._scheduler.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OmnisendServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- inspection -----------------------------------------------------------------------

    def contacts(self) -> list[Contact]:
        """Every stored contact (all accounts) in the 2026-03-15 shape, creation order."""
        with self._store.lock:
            return [render_contact(c, LATEST) for c in self._store.all_contacts()]

    def contact(self, email: str) -> Contact | None:
        """Lookup by EXACT email: Omnisend treats emails as case-sensitive identifiers."""
        with self._store.lock:
            for account in self._store.accounts.values():
                found = self._store.by_email(account, email)
                if found is not None:
                    return render_contact(found, LATEST)
        return None

    def welcome_messages(self) -> list[str]:
        """Emails that were sent a welcome message: a write that subscribed them with
        `sendWelcomeMessage` true (its default in 2026-03-15; false in v5)."""
        with self._store.lock:
            return [e for account in self._store.accounts.values() for e in account.welcomed]

    def batches(self) -> list[dict[str, Any]]:
        """Every batch (all accounts), oldest first, as GET /batches/{id} renders it."""
        with self._store.lock:
            return [render_batch(b) for a in self._store.accounts.values() for b in a.batches]

    def segments(self) -> list[dict[str, Any]]:
        """Every saved segment (all accounts), oldest first, as GET /segments/{id} shows it."""
        with self._store.lock:
            return [
                render_segment(s)
                for a in self._store.accounts.values()
                for s in a.segments.values()
            ]

    def add_segment(
        self,
        name: str,
        tags: Iterable[str] = (),
        *,
        condition_groups: list[Any] | None = None,
        api_key: str | None = None,
        building: bool = False,
        starred: bool = False,
    ) -> dict[str, Any]:
        """A segment someone made by hand in Omnisend (not through the API's budget): the
        rule "tags anyOf `tags`", or `condition_groups` verbatim (validated like a POST)."""
        account = self._store.accounts[api_key or next(iter(self._store.accounts))]
        groups = condition_groups if condition_groups is not None else tag_rule(list(tags))
        write = validate_segment({"name": name, "conditionGroups": groups})
        segment = self._store.add_segment(
            account,
            name=write.name,
            condition_groups=write.condition_groups,
            is_starred=starred,
            building_seconds=self._segments.building_seconds if building else 0.0,
        )
        with self._store.lock:
            return render_segment(segment)

    def segment_members(self, segment_id: str) -> int:
        """What GET /segments/{id}/statistics would answer now (honours the lag knob)."""
        with self._store.lock:
            for account in self._store.accounts.values():
                segment = account.segments.get(segment_id)
                if segment is not None:
                    return self._segments.count_members(account, segment)
        raise KeyError(segment_id)

    def request_log(self) -> list[RequestLogEntry]:
        with self._api.log_lock:
            return list(self._api.log)

    @property
    def requests(self) -> list[RequestLogEntry]:
        return self.request_log()

    def count(
        self, method: str | None = None, path_prefix: str | None = None, status: int | None = None
    ) -> int:
        """How many logged requests match; `path_prefix` is relative to the version root."""
        return sum(
            1
            for e in self.request_log()
            if (method is None or e.method == method.upper())
            and (path_prefix is None or e.path.startswith(path_prefix))
            and (status is None or e.status == status)
        )

    # -- control --------------------------------------------------------------------------

    def add_fault(self, rule: FaultRule) -> FaultRule:
        return self._faults.add(rule)

    def clear_faults(self) -> None:
        """Disarm every rule a test added; what the knobs set up stays."""
        self._faults.clear()
        for rule in self._standing:
            self._faults.add(rule)

    def fault_hits(self) -> list[tuple[FaultRule, int]]:
        """(rule, times fired) for each active rule, in order."""
        return self._faults.fired()

    def settle(self, timeout: float = 10.0) -> bool:
        """Once the client is gone: wait until every request it sent has been answered
        (so the request log is complete) and every asynchronous write accepted so far
        (batches, tag calls) has been applied, as Omnisend does eventually. False when
        `timeout` passes first, e.g. while a client still holds a connection open. (A
        killed client's connection still waiting to be accepted is not waited for: that
        client never saw an answer to it.)"""
        deadline = time.monotonic() + timeout
        while True:
            with self._conn_lock:
                quiet = not self._connections
            if quiet:
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return self._scheduler.wait_for_scheduled(max(deadline - time.monotonic(), 0.0))

    def reset(self) -> None:
        """Forget all data, the request log, faults, rate-limit windows and pending jobs;
        what the knobs set up (foreign batches, standing faults) is set up again."""
        self._scheduler.clear()
        self._store.reset()
        self._limiter.reset()
        with self._api.log_lock:
            self._api.log.clear()
        self.clear_faults()
        self._foreign.seed()
        if self._httpd is not None:
            self._foreign.start_trickle()

    # -- internals used by the handler ------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _sleep_latency(self) -> None:
        low, high = self.latency
        if high <= 0:
            return
        with self._latency_lock:
            delay = self._latency_rng.uniform(low, high)
        time.sleep(delay)
