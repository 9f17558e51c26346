"""Mirror mode: contacts that left the segment lose its tag — and only under guards.

Omnisend is the source of truth for who carries the tag (listed from it, not from our
store). Removal is refused, with the reason logged and recorded, when the stream was
not read completely, when any contact could not be delivered, or when the share of
leavers is implausibly high (a broken source looks exactly like everyone leaving).
Contacts are never deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from target_omnisend.delivery import TAG_CHUNK
from target_omnisend.mapping import email_of

if TYPE_CHECKING:
    from target_omnisend.target import TargetOmnisend


def _refuse(target: TargetOmnisend, stream: str, reason: str) -> None:
    target.logger.warning("Mirror of stream '%s' removed nothing: %s", stream, reason)
    target.outcomes.mirror[stream] = {"removed": 0, "skipped": reason}


def mirror_stream(target: TargetOmnisend, stream: str) -> None:
    settings = target.settings
    tag = settings.segment_tag.format(stream_name=stream)
    counts = target.outcomes.streams[stream]
    if settings.mirror_trigger == "activate_version" and stream not in target.complete_streams:
        _refuse(
            target,
            stream,
            "the tap did not mark it as a full read (no ACTIVATE_VERSION); an incremental "
            "read cannot tell who left (set mirror_trigger: end_of_input if it always is full)",
        )
        return
    failed = counts.rejected_by_reason.get("delivery_failed", 0)
    if failed:
        _refuse(target, stream, f"{failed} contact(s) could not be delivered in this run")
        return
    if target.store is None:
        _refuse(target, stream, "mirror needs the fingerprint store to know who was in the run")
        return
    run_id = target.outcomes.run_id
    tagged = 0
    leavers: list[str] = []
    page: list[str] = []

    def check(emails: list[str]) -> None:
        seen = target.store.seen_in_run(stream, emails, run_id) if target.store else set()
        leavers.extend(email for email in emails if email not in seen)

    for contact in target.client.list_contacts(tag=tag):
        email = email_of(contact)
        if email is None:
            continue
        tagged += 1
        page.append(email)
        if len(page) >= 500:
            check(page)
            page = []
    check(page)
    ratio = len(leavers) / tagged if tagged else 0.0
    if ratio > settings.mirror_max_removal_ratio:
        _refuse(
            target,
            stream,
            f"{len(leavers)} of {tagged} tagged contacts ({ratio:.0%}) would lose the tag, more "
            f"than mirror_max_removal_ratio {settings.mirror_max_removal_ratio:.0%}",
        )
        return
    for start in range(0, len(leavers), TAG_CHUNK):
        chunk = leavers[start : start + TAG_CHUNK]
        if target.dry_run is not None:
            target.dry_run.remove_tags([tag], chunk)
            continue
        target.client.remove_tags([tag], chunk)
        target.store.forget(stream, chunk)
    if target.dry_run is None:
        target.store.commit()
    target.outcomes.mirror[stream] = {"removed": len(leavers), "tagged": tagged}
    target.logger.info(
        "Mirror of stream '%s': %d of %d tagged contact(s) left the segment and %s the tag '%s'",
        stream,
        len(leavers),
        tagged,
        "would lose" if target.dry_run is not None else "lost",
        tag,
    )
