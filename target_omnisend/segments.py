"""Saved segments: after a run, each exported segment is an Omnisend saved segment that
follows its tag.

The tag (`segment:vip_buyers`) is what the target maintains on contacts, mirror
removals included; a saved segment whose rule is "tags any of [that tag]" is what a
marketer picks in a campaign. For every distinct segment tag of the run,
`SegmentKeeper.ensure`:

- finds the segment: by the segmentID the store remembers for its name (one GET), else
  by paging the list (Omnisend's list has no name filter);
- creates it when missing, leaves it alone when its rule already follows the tag;
- leaves a same-named segment with another rule alone (a hand-made segment is the
  user's) unless `segment_overwrite` is set. One the target made itself and nobody
  edited since follows a changed `segment_tag`.

Reads go through the client (a dry run reads too); writes go through the writer (a dry
run writes them to its file instead). Nothing here can fail the run: contacts and tags
are confirmed and STATE emitted before it starts, so every problem becomes one warning.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from target_omnisend.api import MAX_SEGMENT_NAME, SavedSegment
from target_omnisend.client import OmnisendClient, RequestRefused
from target_omnisend.errors import AmbiguousWrite, DeliveryError, MissingScope
from target_omnisend.membership import route_for_key
from target_omnisend.store import FingerprintStore
from target_omnisend.writer import Writer

#: Omnisend's segment statistics follow membership changes only after a while; say so.
COUNT_NOTE = (
    "Omnisend's count; it follows membership changes after up to about a minute, so it may "
    "not include this run's changes yet"
)


def follows(segment: SavedSegment, key: str) -> bool:
    """Does the segment's rule select the members of membership `key` (a tag, or
    `custom:<property>`: see `membership.py`)?"""
    return route_for_key(key).followed_by(segment.condition_groups)


@dataclass(frozen=True)
class SegmentPlan:
    """One saved segment to ensure: its name and the membership its rule follows (`tag`:
    the membership key, a tag or `custom:<property>`)."""

    name: str
    tag: str
    streams: tuple[str, ...]


@dataclass
class SegmentResult:
    """What happened to one segment, for the log and the summary."""

    name: str
    tag: str
    streams: tuple[str, ...]
    #: created | updated | unchanged | skipped | failed (dry run: would_create, would_update)
    action: str = "failed"
    segment_id: str | None = None
    reason: str | None = None
    contacts_count: int | None = None

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name,
            "tag": self.tag,
            "streams": list(self.streams),
            "action": self.action,
            "segment_id": self.segment_id,
        }
        if self.reason:
            result["reason"] = self.reason
        if self.segment_id:
            result["contacts_count"] = self.contacts_count
            result["contacts_count_note"] = COUNT_NOTE
        return result


def plan_segments(
    tags: Mapping[str, str], name_for: Callable[[str], str]
) -> tuple[list[SegmentPlan], list[str]]:
    """Pure: one segment per distinct tag, since streams that write one tag share its
    members. It takes the name of the first stream (by name) that has one; if the
    streams name it differently, a warning says which name won. One name for several
    tags (a template without `{stream_name}`) goes to the first tag only, with a
    warning: else each run would turn the one segment from one tag to the next."""
    by_tag: dict[str, list[str]] = {}
    for stream, tag in sorted(tags.items()):
        by_tag.setdefault(tag, []).append(stream)
    plans: dict[str, SegmentPlan] = {}
    warnings: list[str] = []
    for tag, streams in by_tag.items():
        names = {stream: name_for(stream) for stream in streams}
        named = [stream for stream in streams if names[stream]]
        if not named:
            continue
        name = names[named[0]]
        others = sorted({names[stream] for stream in named} - {name})
        if others:
            warnings.append(
                f"Streams {', '.join(streams)} write the same {route_for_key(tag).label}, so "
                f"they share one Omnisend segment, named '{name}' (not "
                f"{', '.join(repr(o) for o in others)}); "
                "give them one name in segment_names to choose it"
            )
        taken = plans.get(name)
        if taken is not None:
            warnings.append(
                f"Omnisend segment '{name}' would follow both {route_for_key(taken.tag).label} "
                f"and {route_for_key(tag).label}; it follows the first only, stream(s) "
                f"{', '.join(streams)} get no segment (use {{stream_name}} in segment_name, or "
                "segment_names)"
            )
            continue
        plans[name] = SegmentPlan(name, tag, tuple(streams))
    return list(plans.values()), warnings


def pick(candidates: Sequence[SavedSegment], tag: str) -> SavedSegment | None:
    """Pure and deterministic among same-named segments: one whose rule follows the tag
    before one that does not, then the oldest (`createdAt`), then the smallest ID."""
    ordered = sorted(candidates, key=lambda s: (not follows(s, tag), s.created_at, s.segment_id))
    return ordered[0] if ordered else None


def decide(segment: SavedSegment | None, tag: str, made_for: str | None, overwrite: bool) -> str:
    """Pure: "create", "keep", "replace" or "foreign". `made_for` is the tag the target
    made `segment`'s rule for, if the target made it (from the store)."""
    if segment is None:
        return "create"
    if follows(segment, tag):
        return "keep"
    if made_for and follows(segment, made_for):
        return "replace"  # ours, untouched since: it follows the changed segment_tag
    return "replace" if overwrite else "foreign"


class SegmentKeeper:
    """Ensures the run's saved segments, one plan at a time."""

    def __init__(
        self,
        client: OmnisendClient,
        writer: Writer,
        store: FingerprintStore | None,
        *,
        overwrite: bool,
        logger: logging.Logger,
    ) -> None:
        self.client = client
        self.writer = writer
        self.store = store
        self.overwrite = overwrite
        self.logger = logger
        #: Every segment of the account, listed once per run and only if needed.
        self._listing: list[SavedSegment] | None = None

    def ensure(self, plan: SegmentPlan) -> SegmentResult:
        result = SegmentResult(plan.name, plan.tag, plan.streams)
        try:
            self._ensure(plan, result)
        except MissingScope as exc:
            result.action = "skipped"
            result.reason = (
                f"the API key lacks the '{exc.scope}' scope; add it to the key in Omnisend "
                "(contacts and tags were delivered), or set segment_name to '' to stop trying"
            )
        except (DeliveryError, RequestRefused, sqlite3.Error) as exc:
            result.action = "failed"
            result.reason = f"{exc}; left as it is, the next run tries again"
        if result.segment_id:
            result.contacts_count = self._count(result.segment_id)
        self._log(result)
        return result

    def _ensure(self, plan: SegmentPlan, result: SegmentResult) -> None:
        if len(plan.name) > MAX_SEGMENT_NAME:
            result.action = "skipped"
            result.reason = f"the name is longer than Omnisend's {MAX_SEGMENT_NAME} characters"
            return
        segment, made_for = self._remembered(plan)
        remembered = segment is not None
        if segment is None:
            segment = self._by_name(plan)
        verdict = decide(segment, plan.tag, made_for, self.overwrite)
        if verdict == "foreign":
            assert segment is not None
            result.action = "skipped"
            result.reason = (
                f"a segment named '{plan.name}' ({segment.segment_id}) has another rule and is "
                "left alone; name ours differently (segment_name / segment_names), or set "
                "segment_overwrite: true to make that one follow the tag"
            )
            return
        verb = {"create": "create", "replace": "update"}.get(verdict)
        if verdict == "create":
            segment = self._create(plan)
        elif verdict == "replace":
            assert segment is not None
            segment = self._replace(segment, plan) or segment
        if verb is None:
            result.action = "unchanged"
        else:
            result.action = f"{verb}d" if self.writer.sends else f"would_{verb}"
        if segment is None:
            return
        result.segment_id = segment.segment_id
        if verb is not None:
            # Written by the target: only such a segment may later follow a changed
            # segment_tag by itself.
            self._remember(plan, segment.segment_id, plan.tag)
        elif not remembered:
            self._remember(plan, segment.segment_id, "")  # where it is, not that it is ours

    # -- finding ----------------------------------------------------------------------

    def find(self, plan: SegmentPlan) -> SavedSegment | None:
        """The existing segment whose rule follows the plan's membership, without writing
        anything (mirror lists a property's members through it); None if there is none
        yet, or the key lacks a segments scope."""
        try:
            segment, _ = self._remembered(plan)
            segment = segment or self._by_name(plan)
        except (MissingScope, DeliveryError, RequestRefused, sqlite3.Error):
            return None
        return segment if segment is not None and follows(segment, plan.tag) else None

    def _remembered(self, plan: SegmentPlan) -> tuple[SavedSegment | None, str | None]:
        """The segment the store remembers under this name, and the tag the target wrote
        its rule for — only if it was written for one of these streams: another pipeline
        sharing the store and the name must not turn it to its own tag."""
        known = self.store.saved_segment(plan.name) if self.store is not None else None
        if known is None or self.store is None:
            return None, None
        segment_id, made_for, streams = known
        segment = self.client.get_segment(segment_id)
        if segment is None or segment.name != plan.name:
            # Deleted or renamed in Omnisend: it no longer stands for this name.
            self.store.forget_segment(plan.name)
            return None, None
        return segment, made_for if set(streams) & set(plan.streams) else None

    def _list(self, *, fresh: bool = False) -> list[SavedSegment]:
        if self._listing is None or fresh:
            self._listing = list(self.client.segments())
        return self._listing

    def _by_name(self, plan: SegmentPlan, *, fresh: bool = False) -> SavedSegment | None:
        same = [s for s in self._list(fresh=fresh) if s.name == plan.name]
        chosen = pick(same, plan.tag)
        if len(same) > 1 and chosen is not None:
            self.logger.warning(
                "%d Omnisend segments are named '%s'; using %s (%s), the others are left alone",
                len(same),
                plan.name,
                chosen.segment_id,
                "the oldest that follows the tag"
                if follows(chosen, plan.tag)
                else "the oldest; none follows the tag",
            )
        return chosen

    # -- writing ----------------------------------------------------------------------

    def _create(self, plan: SegmentPlan) -> SavedSegment | None:
        """POST, never blindly twice: after an answer that leaves open whether Omnisend
        created it (timeout, reset, 5xx), look the name up before posting again."""
        body = route_for_key(plan.tag).segment_body(plan.name)
        for _ in range(2):
            try:
                created = self.writer.create_segment(body)
            except AmbiguousWrite as exc:
                self.logger.warning(
                    "Creating segment '%s' may or may not have worked (%s); looking it up "
                    "before trying again",
                    plan.name,
                    exc,
                )
            else:
                if created is not None or not self.writer.sends:
                    if created is not None and self._listing is not None:
                        self._listing.append(created)
                    return created
            found = self._by_name(plan, fresh=True)
            if found is not None and follows(found, plan.tag):
                return found
        raise DeliveryError(
            f"creating segment '{plan.name}' could not be confirmed after two tries; the next "
            "run looks for it by name before creating it"
        )

    def _replace(self, segment: SavedSegment, plan: SegmentPlan) -> SavedSegment | None:
        """PUT (a full replace, safe to repeat). Omnisend answers 409 while a segment is
        building: the client retries it like a 5xx, with bounded backoff, and a 409 that
        outlasts `max_retries` ends as a `DeliveryError` the caller turns into a warning."""
        return self.writer.replace_segment(
            segment.segment_id, route_for_key(plan.tag).segment_body(plan.name)
        )

    def _remember(self, plan: SegmentPlan, segment_id: str, made_for: str) -> None:
        if self.store is not None:
            self.store.remember_segment(plan.name, segment_id, made_for, plan.streams)

    # -- reporting --------------------------------------------------------------------

    def _count(self, segment_id: str) -> int | None:
        """One statistics read, no waiting: the count lags tag changes anyway."""
        try:
            stats = self.client.segment_statistics(segment_id)
        except (MissingScope, DeliveryError, RequestRefused):
            return None
        count = stats.get("contactsCount")
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    def _log(self, result: SegmentResult) -> None:
        where = f"Omnisend segment '{result.name}' ({route_for_key(result.tag).label})"
        if result.reason:
            self.logger.warning("%s %s: %s", where, result.action, result.reason)
            return
        count = (
            f"; {result.contacts_count} contact(s) by Omnisend's statistics, which follow "
            "membership changes after up to about a minute"
            if result.contacts_count is not None
            else ""
        )
        self.logger.info(
            "%s %s, id %s%s",
            where,
            result.action.replace("_", " "),
            result.segment_id or "(none yet: dry run)",
            count,
        )
