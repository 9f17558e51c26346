"""One run, start to end: the only object that knows what a run has promised.

The pipeline owns, for one run, the writer (real delivery or its dry-run substitute),
the fingerprint store, the outcome ledger, the carry buffers, checkpoints and the end
of the run. Sinks hand it mapped contacts; the delivery engine reports final outcomes
to it; the target asks it for a checkpoint before every STATE and hands it the end of
input and any cancel signal. Its promises:

- `checkpoint()` returns only when every record handed over so far has a final,
  durable outcome, and says whether STATE may follow (never in a dry run, never after
  a cancel).
- Within a run the newest record of an email is the one Omnisend ends with: a record
  is skipped as unchanged only when no other version of it is waiting or in flight.
- `cancel()` abandons what is in hand and ends the process without another STATE: the
  last STATE emitted covers only records that were delivered.
- Mirror acts per tag, over every stream of the run that writes it, only when all of
  them were read completely and delivered without failures (see `mirror.py`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from target_omnisend.client import OmnisendClient
from target_omnisend.delivery import DeliveryEngine, Item, OutcomeSink
from target_omnisend.dryrun import DryRunWriter
from target_omnisend.email_schema import candidates_text, email_like_fields
from target_omnisend.mapping import (
    Rejection,
    default_status_date,
    get_path,
    merge_duplicate,
    normalize_email,
)
from target_omnisend.membership import Membership, route_for_key
from target_omnisend.mirror import MirrorRun, clear_present, member_key, mirror_tag
from target_omnisend.outcomes import Outcomes
from target_omnisend.outputs import prepare_output_paths
from target_omnisend.progress import ProgressReporter
from target_omnisend.ratelimit import RateLimits
from target_omnisend.seen import SeenEmails, WrittenThisRun
from target_omnisend.segments import SegmentKeeper, SegmentPlan, plan_segments
from target_omnisend.settings import Settings
from target_omnisend.store import FingerprintStore, ReadOnlyStore, account_scope, fingerprint
from target_omnisend.writer import OmnisendWriter, Writer


@dataclass
class _Stream:
    """What the pipeline keeps per stream (segment) during a run."""

    tags: tuple[str, ...]
    #: How membership is written (segment tag or property); None: not at all.
    membership: Membership | None
    part: str | None
    #: Changed contacts waiting for a full batch (latest version per email).
    carry: dict[str, Item]
    complete: bool = False


#: A stream whose first this-many records all lack the email gets one warning naming
#: `email_field` (the rest of the run goes on: they are rejected and counted).
EMAIL_FIELD_HINT_AFTER = 20


class RunPipeline:
    def __init__(
        self,
        settings: Settings,
        logger: logging.Logger,
        client: OmnisendClient,
        store: FingerprintStore | None,
    ) -> None:
        self.settings = settings
        self.logger = logger
        self.client = client
        self.store = store
        self.outcomes = Outcomes(settings.rejected_records_path, logger)
        if store is not None:  # staged removals and partitions name the same run
            store.run_id = self.outcomes.run_id
        self.progress = ProgressReporter(self.outcomes, logger, settings.progress_interval)
        self.started_at = time.monotonic()
        self.cancelled = False
        self.writer: Writer
        self.engine: DeliveryEngine | None = None
        self._streams: dict[str, _Stream] = {}
        #: Mapped contacts of every stream, in input order, until the next drain.
        self._pending: list[Item] = []
        #: Mirror only: who was in this run, per segment tag (by `member_key`).
        self._seen: dict[str, SeenEmails] = {}
        #: Mirror only: members tagged by this run's own tag calls, per segment tag (a
        #: tag call is asynchronous in Omnisend: the listing may not show them yet).
        self._tagged_now: dict[str, SeenEmails] = {}
        #: Emails sent in this run, whatever the stream (see `WrittenThisRun`).
        self._written = WrittenThisRun()
        self._mirror_results: dict[str, dict[str, Any]] = {}
        self._segment_results: list[dict[str, Any]] = []
        self._segment_requests = 0
        self._keeper: SegmentKeeper | None = None

    @classmethod
    def start(cls, settings: Settings, logger: logging.Logger) -> RunPipeline:
        """Connect, open the store and pick the writer. This is the one place where a
        dry run differs: a file writer instead of delivery, a read-only store."""
        prepare_output_paths(settings)
        client = OmnisendClient(
            base_url=settings.api_url,
            api_key=settings.api_key,
            generation=settings.generation,
            limits=RateLimits(
                settings.requests_per_minute,
                settings.tags_requests_per_minute,
                max_wait=settings.max_wait,
                logger=logger,
            ),
            timeout=settings.request_timeout,
            max_retries=settings.max_retries,
            pool_size=settings.max_concurrency + 2,
            logger=logger,
        )
        client.check_connection()
        store_class = ReadOnlyStore if settings.dry_run else FingerprintStore
        store = (
            store_class(
                settings.fingerprint_store_path,
                account_scope(settings.api_url, settings.api_key),
                settings.mapping_hash(),
                schema=settings.fingerprint_store_schema,
                password=settings.fingerprint_store_password,
                lock_timeout=settings.fingerprint_store_lock_timeout,
                logger=logger,
            )
            if settings.fingerprint_store_path
            else None
        )
        pipeline = cls(settings, logger, client, store)
        if settings.dry_run:
            pipeline.writer = DryRunWriter(settings.dry_run_path, client, pipeline)
        else:

            def new_engine(sink: OutcomeSink) -> DeliveryEngine:
                return DeliveryEngine(
                    client,
                    sink,
                    max_concurrency=settings.max_concurrency,
                    max_pending_batches=settings.max_pending_batches,
                    poll_interval=settings.batch_poll_interval,
                    batch_timeout=settings.batch_timeout,
                    logger=logger,
                )

            pipeline.engine = new_engine(pipeline)
            # Mirror's property removals get an engine of their own (not the run's records).
            pipeline.writer = OmnisendWriter(pipeline.engine, client, new_engine)
        return pipeline

    # -- streams ----------------------------------------------------------------------

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            tags = self.settings.tags_for(name)
            membership = self.settings.membership_for(name)
            key = membership.key if membership else None
            part = None
            if self.store is not None:
                if self.store.is_new_mapping(name):
                    self._announce_full_send(name, membership)
                # The membership key among the partition's tags: mirror forgets by it.
                part = self.store.part(name, tags if key in (None, *tags) else (*tags, key))
            stream = self._streams[name] = _Stream(tags, membership, part, {})
            if self.settings.sync_mode == "mirror" and key:
                self._seen.setdefault(key, SeenEmails())
                self._tagged_now.setdefault(key, SeenEmails())
        return stream

    def _announce_full_send(self, name: str, membership: Membership | None) -> None:
        """One line on why every contact of the stream is sent again; a warning when the
        reason is a switch between tag and property membership (the saved segment this
        stream had remembers which one it followed)."""
        assert self.store is not None
        remembered = self.store.saved_segment(self.settings.segment_name_for(name) or name)
        before = route_for_key(remembered[1]) if remembered and remembered[1] else None
        if membership is not None and before is not None and type(before) is not type(membership):
            self.logger.warning(
                "Stream '%s': membership switches from %s to %s, so every contact of the "
                "stream is sent once again (one full send); the saved segment follows the new "
                "rule and the old marks stay on contacts until removed in Omnisend",
                name,
                before.label,
                membership.label,
            )
            return
        self.logger.info(
            "Stream '%s': the mapping configuration changed since the last run, "
            "so every contact is sent again",
            name,
        )

    def read_in_full(self, name: str) -> None:
        """The tap marked this stream as a full read (ACTIVATE_VERSION)."""
        self._stream(name).complete = True

    # -- what sinks hand over ---------------------------------------------------------

    def received(self, name: str) -> None:
        self.outcomes.received(name)

    def warned(self, name: str, warning: str) -> None:
        self.outcomes.warned(name, warning)

    def merged(self, name: str) -> None:
        self.outcomes.merged(name)

    def reject(self, name: str, record: Any, code: str, reason: str) -> None:
        """A record that cannot be delivered. If it names a member, that member still
        counts as present for mirror: a bad record this run is no reason to untag."""
        self.outcomes.rejected(name, record, code, reason)
        if code == "missing_email":
            self._warn_if_email_field_is_wrong(name, record)
        seen = self._seen_for(name)
        if seen is not None and isinstance(record, dict):
            email = normalize_email(get_path(record, self.settings.mapping.email_field))
            if not isinstance(email, Rejection):
                seen.add(email)  # lower-cased: `member_key` whatever lowercase_emails says

    def _warn_if_email_field_is_wrong(self, name: str, record: Any) -> None:
        """Once, when the first `EMAIL_FIELD_HINT_AFTER` records of a stream all lack
        the email: the schema has the field, but the source leaves it empty (or
        `email_field` names the wrong one). Field names only, never values."""
        counts = self.outcomes.streams.get(name)  # read on the one reading thread: no copy
        if counts is None or counts.received != EMAIL_FIELD_HINT_AFTER:
            return
        if counts.rejected_by_reason["missing_email"] != EMAIL_FIELD_HINT_AFTER:
            return
        names = email_like_fields(record) if isinstance(record, dict) else []
        self.logger.warning(
            "Stream '%s': none of the first %d records has a value in '%s' (email_field); "
            "is it the field that holds the email? In the records, %s",
            name,
            EMAIL_FIELD_HINT_AFTER,
            self.settings.mapping.email_field,
            candidates_text(names).replace("the schema has", "there is"),
        )

    def _seen_for(self, name: str) -> SeenEmails | None:
        membership = self._stream(name).membership
        return self._seen.get(membership.key) if membership else None

    def pend(self, item: Item) -> None:
        """A mapped contact, kept with those of every other stream in input order."""
        self._pending.append(item)

    def hand_over_pending(self) -> None:
        """Any drain hands over what every stream has pending, in input order: when one
        contact is in two segments, its newest record is then the one sent last (the
        SDK drains sink by sink, which would order them by stream instead)."""
        pending, self._pending = self._pending, []
        for name, group in itertools.groupby(pending, key=attrgetter("stream")):
            self.hand_over(name, list(group))

    def hand_over(self, name: str, items: list[Item]) -> None:
        """Skip what Omnisend already has, carry the rest until a batch is full."""
        stream = self._stream(name)
        items = self._merge_duplicates(name, items)
        seen = self._seen_for(name)
        store = self.store if stream.part is not None else None
        known = (
            store.known(stream.part or "", [item.email for item in items])
            if store is not None and not self.settings.full_refresh
            else {}
        )
        encode = self.client.encode_contact
        mark = stream.membership.mark if stream.membership else None
        run_started_at = self.settings.mapping.run_started_at
        default_date = self.settings.mapping.default_status_date
        carry = stream.carry
        unchanged = 0
        others = [other for other in self._streams.values() if other is not stream]
        written = self._written if others else None  # one stream: nobody else wrote it
        # Lower-cased emails already are their `member_key`: skip the second normalisation.
        key = str if self.settings.mapping.lowercase_emails else member_key
        for item in items:
            if seen is not None:
                seen.add(key(item.email))
            for other in others:  # an older version waits in another segment's carry:
                if item.email in other.carry:  # it goes first, so this one lands after it
                    self._send(other, full_only=False)
            waiting = carry.pop(item.email, None)
            if waiting is not None:  # the later version replaces the waiting one, but
                item.body = merge_duplicate(waiting.body, item.body)  # never a newer status
            if mark is not None:  # membership in the body (property) or nothing (tag)
                mark(item.body)
            item.payload = encode(item.body)
            if store is not None:
                item.fingerprint = fingerprint(item.payload, run_started_at, default_date)
            previous = known.get(item.email)
            if waiting is not None:
                self.outcomes.merged(name)
            elif (
                previous is not None
                and previous == item.fingerprint
                and not self.writer.in_flight(item.email)
                # Another stream wrote its version earlier in this run (a checkpoint may
                # have confirmed it since): this stream's own fingerprint is stale then.
                and (written is None or item.email not in written)
            ):
                unchanged += 1
                continue
            # Only contacts new to the segment cost a (slow, 60/min) tag call.
            item.tags = stream.tags if previous is None else ()
            carry[item.email] = item
            self._written.add(item.email)
        if unchanged:
            self.outcomes.unchanged(name, unchanged)
        self._send(stream, full_only=True)

    def _merge_duplicates(self, name: str, items: list[Item]) -> list[Item]:
        """One item per email of a hand-over, the latest record's, counted as merged (a
        duplicate of an unchanged contact is a duplicate, not a second unchanged one);
        its status stays the newer of the two."""
        latest: dict[str, Item] = {}
        for item in items:
            earlier = latest.pop(item.email, None)
            if earlier is not None:
                item.body = merge_duplicate(earlier.body, item.body)
                self.outcomes.merged(name)
            latest[item.email] = item
        return list(latest.values()) if len(latest) < len(items) else items

    def _send(self, stream: _Stream, *, full_only: bool) -> None:
        size = self.settings.batch_size
        carry = stream.carry
        while len(carry) >= size or (carry and not full_only):
            batch = [carry.pop(email) for email in list(carry)[:size]]
            self._date_default_status(batch)
            self.writer.submit(batch)

    def _date_default_status(self, batch: list[Item]) -> None:
        """The default status (`email_status`) is dated when its batch goes out, not when
        the run started. Its date runs backwards with time (`default_status_date`), so a
        run that started first but reaches a contact last — two pipelines at once, a
        long run — would otherwise write a newer date than the run that created the
        contact meanwhile, and change its status. Fingerprints read either date the same."""
        run_date = self.settings.mapping.default_status_date
        now_date = default_status_date(dt.datetime.now(dt.timezone.utc))
        if now_date == run_date:
            return
        for item in batch:
            if run_date in item.payload:
                item.payload = item.payload.replace(run_date, now_date)

    # -- what the engine reports (OutcomeSink) ----------------------------------------

    def delivered_items(self, items: list[Item]) -> None:
        by_stream: dict[str, list[Item]] = {}
        for item in items:
            by_stream.setdefault(item.stream, []).append(item)
        for name, delivered in by_stream.items():
            self.outcomes.delivered(name, len(delivered))
            stream = self._streams.get(name)
            route = stream.membership if stream else None
            tagged_now = self._tagged_now.get(route.key) if route else None
            if route is not None and tagged_now is not None:
                for item in delivered:  # marked now: its batch item, or its tag call
                    if route.in_body or item.tags:
                        tagged_now.add(member_key(item.email))
            part = self._streams[name].part if name in self._streams else None
            if self.store is not None and part is not None:
                self.store.confirm(
                    part, [(i.email, i.fingerprint) for i in delivered if i.fingerprint]
                )

    def rejected_item(self, item: Item, code: str, reason: str) -> None:
        self.outcomes.rejected(item.stream, item.record, code, reason, email=item.email)

    # -- checkpoints and the end ------------------------------------------------------

    def checkpoint(self) -> bool:
        """Every record handed over so far has a final, durable outcome. Returns whether
        a STATE may now be emitted."""
        if self.cancelled:
            return False
        for stream in self._streams.values():
            self._send(stream, full_only=False)
        self.writer.wait_idle()
        self.outcomes.sync()
        if self.store is not None:
            self.store.commit()
        return self.writer.sends

    def finish(self) -> None:
        """End of input: the last checkpoint, mirror, the saved segments (once every tag
        call is confirmed and every removal made), then the summary."""
        self.checkpoint()
        if self.settings.sync_mode == "mirror":
            self._mirror()
        self._ensure_segments()
        self.writer.close()
        self.outcomes.close()
        if self.store is not None:
            self.store.close()
        self._report()

    def cancel(self, signum: int) -> None:
        """SIGTERM/SIGINT: abandon what is in hand, emit no STATE, exit non-zero now.
        Runs in the signal handler, wherever the reading thread was: it takes no lock
        that thread may hold, and leaves through `os._exit` so that no drain, STATE or
        exit handler runs after it. Confirmed fingerprints not yet committed are lost,
        which only costs a re-send."""
        self.cancelled = True
        self.writer.cancel()
        self.logger.error(
            "Run cancelled by %s: nothing more is sent and no STATE follows; the last "
            "STATE emitted covers only delivered records",
            signal.Signals(signum).name,
        )
        for handler in logging.getLogger().handlers + self.logger.handlers:
            handler.flush()
        sys.stdout.flush()
        os._exit(128 + signum)

    def _mirror(self) -> None:
        by_tag: dict[str, list[str]] = {}
        routes: dict[str, Membership] = {}
        for name, stream in self._streams.items():
            if stream.membership:
                by_tag.setdefault(stream.membership.key, []).append(name)
                routes[stream.membership.key] = stream.membership
        for tag, names in by_tag.items():
            route = routes[tag]
            # Present members clear their stage before anything that may fail (listing
            # Omnisend's members, removals): a run that ends in an error still counts
            # as their return, so a later read counts their absences from zero.
            cleared = clear_present(tag, self._seen[tag], self.store) if self.store else 0
            reason = self._mirror_refusal(names)
            listed = None if reason else route.members(self.writer, lambda t=tag: self._find(t))
            if listed is None and not reason:
                reason = (
                    f"no saved segment follows {route.label} yet, and Omnisend lists a "
                    "property's members only through one (this run creates it, unless a "
                    "segment of that name has another rule: see the segment line; the next "
                    "run can then tell who left)"
                )
            if reason:
                self.logger.warning("Mirror of %s removed nothing: %s", route.label, reason)
                self._mirror_results[tag] = {
                    "removed": 0,
                    "retagged": 0,
                    "skipped": reason,
                    "stage_cleared": cleared,
                }
                continue
            assert self.store is not None and listed is not None  # _mirror_refusal checked
            run = MirrorRun(
                tag,
                streams=names,
                parts=[part for n in names if (part := self._streams[n].part) is not None],
                present=self._seen[tag],
                tagged_now=self._tagged_now[tag],
            )
            self._mirror_results[tag] = mirror_tag(
                run,
                members=_Members(route, self.writer, listed),
                store=self.store,
                run_id=self.outcomes.run_id,
                max_ratio=self.settings.mirror_max_removal_ratio,
                confirm_runs=self.settings.mirror_confirm_runs,
                logger=self.logger,
            )
            if "skipped" in self._mirror_results[tag]:
                self._mirror_results[tag]["stage_cleared"] = cleared

    def _plans(self) -> tuple[list[SegmentPlan], list[str]]:
        keys = {n: s.membership.key for n, s in self._streams.items() if s.membership}
        return plan_segments(keys, self.settings.segment_name_for)

    def _segment_keeper(self) -> SegmentKeeper:
        if self._keeper is None:
            self._keeper = SegmentKeeper(
                self.client,
                self.writer,
                self.store,
                overwrite=self.settings.segment_overwrite,
                logger=self.logger,
            )
        return self._keeper

    def _find(self, key: str) -> str | None:
        """The ID of the saved segment that follows membership `key`, if one exists."""
        plan = next((p for p in self._plans()[0] if p.tag == key), None)
        found = self._segment_keeper().find(plan) if plan is not None else None
        return found.segment_id if found is not None else None

    def _ensure_segments(self) -> None:
        """One Omnisend saved segment per membership of the run (see `segments.py`)."""
        plans, warnings = self._plans()
        for warning in warnings:
            self.logger.warning("%s", warning)
        if not plans:
            return
        keeper = self._segment_keeper()
        before = self.client.stats.requests
        self._segment_results = [keeper.ensure(plan).as_dict() for plan in plans]
        self._segment_requests = self.client.stats.requests - before

    def _mirror_refusal(self, names: list[str]) -> str | None:
        """Why the streams writing one tag cannot tell who left, if they cannot."""
        if self.store is None:
            return "mirror needs the fingerprint store to stage removals"
        if self.settings.mirror_trigger == "activate_version":
            partial = [n for n in names if not self._streams[n].complete]
            if partial:
                return (
                    f"stream(s) {', '.join(partial)} were not marked as a full read "
                    "(no ACTIVATE_VERSION); an incremental read cannot tell who left (set "
                    "mirror_trigger: end_of_input if the tap always sends the whole segment)"
                )
        totals = self.outcomes.totals()
        failed = sum(
            totals[n]["rejected_by_reason"].get("delivery_failed", 0) for n in names if n in totals
        )
        if failed:
            return f"{failed} contact(s) could not be delivered in this run"
        if not any(name in totals for name in names):
            # Whatever mirror_max_removal_ratio allows: an empty read looks exactly like
            # a broken source, and "everyone left" is not something to act on unseen.
            return "the run brought no record of the segment at all"
        return None

    def _warn_no_record(self) -> None:
        """A run that received no record at all: most often the extractor's stream was
        not selected (Meltano skips a deselected stream without a word)."""
        self.logger.warning(
            "No record was received, so nothing was delivered. Under Meltano, check that "
            "the extractor selects the stream: `meltano select <extractor> --list` shows "
            "what it reads, and `meltano select <extractor> <stream> '*'` selects one"
        )

    def _report(self) -> None:
        self.progress.stop()
        elapsed = time.monotonic() - self.started_at
        totals = self.outcomes.totals()
        if not any(counts["received"] for counts in totals.values()):
            self._warn_no_record()
        # A dry run delivers nothing: its counts are what a real run would deliver.
        delivered = "delivered" if self.writer.sends else "would_deliver"
        for name, counts in totals.items():
            self.logger.info(
                "Summary for stream '%s': received=%d %s=%d rejected=%d unchanged=%d "
                "merged_duplicates=%d rejected_by_reason=%s warnings=%s",
                name,
                counts["received"],
                delivered,
                counts["delivered"],
                counts["rejected"],
                counts["unchanged"],
                counts["merged_duplicates"],
                json.dumps(counts["rejected_by_reason"]),
                json.dumps(counts["warnings"]),
            )
        stats = self.client.stats
        engine = self.engine.stats if self.engine is not None else None
        if self.settings.summary_path:
            summary = {
                "run_id": self.outcomes.run_id,
                "dry_run": not self.writer.sends,
                "seconds": round(elapsed, 3),
                "streams": totals,
                "requests": stats.requests,
                "retries": stats.retries,
                "rate_limited": stats.rate_limited,
                "batches": engine.batches_sent if engine else 0,
                "tag_calls": engine.tag_calls if engine else 0,
                "polls": engine.polls if engine else 0,
                "item_fetches": engine.items_fetches if engine else 0,
                "mirror": self._mirror_results,
                "segments": self._segment_results,
                "segment_requests": self._segment_requests,
            }
            with open(self.settings.summary_path, "w", encoding="utf-8") as fh:
                json.dump(summary, fh, indent=2)
        closing = self.writer.closing_line()
        if closing:
            self.logger.info("%s", closing)
        self.logger.info(
            "Run finished in %.1fs: %d requests (%d retries, %d rate-limited), %d batches, "
            "%d polls",
            elapsed,
            stats.requests,
            stats.retries,
            stats.rate_limited,
            engine.batches_sent if engine else 0,
            engine.polls if engine else 0,
        )


class _Members:
    """Mirror's view of one membership: Omnisend's listing, removals through the route."""

    def __init__(self, route: Membership, writer: Writer, listed: Iterable[str]) -> None:
        self.route = route
        self.writer = writer
        self._listed = listed
        self.sends = writer.sends
        self.label = route.label
        self.in_body = route.in_body

    def listed(self) -> Iterable[str]:
        return self._listed

    def remove(self, emails: list[str]) -> int:
        return self.route.remove(self.writer, emails)

    def restore(self, emails: list[str]) -> None:
        self.route.restore(self.writer, emails)
