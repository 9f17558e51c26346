"""Mirror mode: contacts that left the segment lose its tag (or membership property) —
only under guards, and only after they stayed away for `mirror_confirm_runs` complete
runs in a row. Which of the two it is does not matter here: `Members` lists and removes
through the stream's membership route (`membership.py`).

Omnisend is the source of truth for who carries the tag (listed from it, not from our
store); the run's seen-set says who was in the segment this time. The target cannot
see the tap's exit code and `meltano run` ends the input the same way whether the tap
finished or died, so one complete-looking read is not proof that a member left:
removals are *staged* in the store and carried out only when the member is absent
again from the next complete read(s). A run where the share of absent members is above
`mirror_max_removal_ratio` (a broken or empty source looks exactly like everyone
leaving) removes and stages nothing. Contacts are never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from target_omnisend.mapping import normalize_email
from target_omnisend.seen import SeenEmails
from target_omnisend.store import FingerprintStore


class Members(Protocol):
    """Omnisend's members of one segment, whichever way membership is written."""

    #: Whether removals reach Omnisend (False: a dry run writes them to its file).
    sends: bool
    #: "tag 'segment:vip'" / "property 'in_vip'", for the log.
    label: str

    def listed(self) -> Iterable[str]:
        """Emails Omnisend holds as members (a read)."""

    def remove(self, emails: list[str]) -> int:
        """Take these members out; how many Omnisend confirmed."""

    def restore(self, emails: list[str]) -> None:
        """Give these members their membership back (mirror's repair of drift)."""

    #: Whether membership rides in the member's own contact body (the property route).
    in_body: bool


@dataclass(frozen=True)
class MirrorDecision:
    """What one complete run means for a tag's absent members."""

    remove: list[str] = field(default_factory=list)
    #: Members absent but not (yet) removed -> consecutive complete runs absent.
    staged: dict[str, int] = field(default_factory=dict)
    refused: str | None = None


def decide(
    tagged: int,
    absent: list[str],
    previous: dict[str, tuple[int, str]],
    run_id: str,
    *,
    max_ratio: float,
    confirm_runs: int,
    overlapped: Container[str] = (),
) -> MirrorDecision:
    """Pure: absent members are removed once absent `confirm_runs` runs in a row, unless
    this run's absent share exceeds `max_ratio` (then nothing at all changes). A stage
    written by a run this one overlapped (`overlapped`: it waited for it) is not counted
    again: two runs of one pipeline at once read the same source."""
    ratio = len(absent) / tagged if tagged else 0.0
    if ratio > max_ratio:
        return MirrorDecision(
            refused=f"{len(absent)} of {tagged} tagged contacts ({ratio:.0%}) are absent from "
            f"this run, more than mirror_max_removal_ratio {max_ratio:.0%}"
        )
    remove: list[str] = []
    staged: dict[str, int] = {}
    for email in absent:
        runs, last_run = previous.get(email, (0, ""))
        runs = runs if last_run == run_id or last_run in overlapped else runs + 1
        if runs >= confirm_runs:
            remove.append(email)
        else:
            staged[email] = runs
    return MirrorDecision(remove=remove, staged=staged)


def member_key(email: str) -> str:
    """One identity for a member on both sides of the comparison: trimmed and
    lower-cased, whatever `lowercase_emails` says. The run's members and the contacts
    Omnisend lists are both keyed so; a contact Omnisend holds as `Jane@X.com` (sent so
    with `lowercase_emails: false`, or written by another tool) is the member
    `jane@x.com`, so it is never untagged while she is in the segment, nor re-tagged
    every run. Two contacts differing only by case are one member: if either is present
    both keep the tag (the safe direction)."""
    key = normalize_email(email)
    return key if isinstance(key, str) else email.strip().lower()


def is_missing(email: str, listed: Container[str], tagged_now: Container[str]) -> bool:
    """Pure: a run's member (as Omnisend holds it) whose membership Omnisend's listing
    lacks — taken off by a person or another tool since — and that this run did not just
    mark (Omnisend applies tag calls asynchronously, so its listing may not show those
    yet). It gets its membership back."""
    key = member_key(email)
    return key not in listed and key not in tagged_now


@dataclass
class MirrorRun:
    """What the pipeline knows about one tag's streams in this run."""

    tag: str
    #: Stream names of this run that write the tag (this pipeline).
    streams: list[str]
    #: Their fingerprint partitions: the members Omnisend holds for them.
    parts: list[str]
    #: Member keys present in this run (delivered, unchanged or rejected).
    present: Container[str]
    #: Member keys this run's own tag calls tagged.
    tagged_now: Container[str]


def clear_present(tag: str, present: Container[str], store: FingerprintStore) -> int:
    """A member present again clears its staged removal — in every run, even one whose
    mirror is refused (an incremental read, a delivery failure, the ratio guard) or
    fails (Omnisend's listing unavailable): a later complete read must count its
    absences from zero. The pipeline calls it first, before any read of Omnisend."""
    back = [email for email in store.staged(tag) if member_key(email) in present]
    store.clear_absences(tag, back)
    return len(back)


def mirror_tag(
    run: MirrorRun,
    *,
    members: Members,
    store: FingerprintStore,
    run_id: str,
    max_ratio: float,
    confirm_runs: int,
    logger: logging.Logger,
) -> dict[str, Any]:
    """Reconcile one segment: the desired set is the run's members, the actual set who
    Omnisend holds as members (the tag's contacts, or the property segment's). Members
    missing from it get their membership back; absentees are staged, then removed (or,
    for a dry-run writer, the plan is written).

    Other pipelines may write the same tag (another Meltano job sharing the store): a
    member another pipeline holds — confirmed in a partition of another stream that
    carries this tag, and not dropped by that pipeline's latest complete read — is
    theirs, not an absentee here. This pipeline's own partitions are trimmed to this
    read's members once the read is trusted, so what it holds is always its latest
    complete read; a member is removed only when no pipeline writing the tag holds it."""
    tag, present = run.tag, run.present
    listed = SeenEmails()
    tagged = 0
    absent: list[str] = []
    for email in members.listed():
        tagged += 1
        listed.add(member_key(email))
        if member_key(email) not in present:
            absent.append(email)  # removed by the identity Omnisend listed
    held = store.held_elsewhere(tag, run.streams, absent)
    theirs = [email for email in absent if email in held]
    absent = [email for email in absent if email not in held]
    decision = decide(
        tagged - len(theirs),
        absent,
        store.absences(tag, absent),
        run_id,
        max_ratio=max_ratio,
        confirm_runs=confirm_runs,
        overlapped=store.overlapped_runs,
    )
    # Filtered while the store pages through the partition: only the few missing the
    # tag are held, not every present member.
    retag = store.members(
        run.parts,
        lambda email: member_key(email) in present and is_missing(email, listed, run.tagged_now),
    )
    # Members are members whatever the guards say about leavers: membership goes back on.
    members.restore(retag)
    if members.in_body and retag:
        # Their contact in Omnisend is not what their fingerprint says (whoever cleared
        # the property may have cleared our other fields too: under Omnisend's
        # undocumented replace semantics, the repair item itself does): the next run
        # sends them in full rather than skipping them as unchanged.
        store.forget_tagged(tag, retag)
    result: dict[str, Any] = {
        "removed": 0,
        "tagged": tagged,
        "retagged": len(retag),
        "held_by_other_pipelines": len(theirs),
    }
    if decision.refused:  # present members' stages were cleared before (`clear_present`)
        logger.warning("Mirror of %s removed nothing: %s", members.label, decision.refused)
        _log_restored(logger, members, retag)
        return {**result, "skipped": decision.refused}
    # Forget first: if the untag is applied but its answer is lost (the run then fails),
    # a member who comes back must be sent and tagged again, not skipped as unchanged.
    store.forget_tagged(tag, decision.remove)
    store.record_absences(tag, decision.staged, run_id)
    # This pipeline now holds exactly this read's members (see the docstring).
    store.drop_members(run.parts, lambda email: member_key(email) not in present)
    store.commit()
    confirmed = members.remove(decision.remove) if decision.remove else 0
    if confirmed < len(decision.remove):
        logger.warning(
            "Mirror of %s: Omnisend did not confirm %d of %d removal(s); those contacts are "
            "still members and are found absent again by the next complete run",
            members.label,
            len(decision.remove) - confirmed,
            len(decision.remove),
        )
    verb = "lost" if members.sends else "would lose"
    logger.info(
        "Mirror of %s: %d of %d member(s) %s it; %d more absent, kept until absent from "
        "%d complete run(s) in a row (mirror_confirm_runs); %d held by other pipelines "
        "writing it",
        members.label,
        len(decision.remove),
        tagged,
        verb,
        len(decision.staged),
        confirm_runs,
        len(theirs),
    )
    _log_restored(logger, members, retag)
    return {**result, "removed": confirmed, "staged": len(decision.staged)}


def _log_restored(logger: logging.Logger, members: Members, restored: list[str]) -> None:
    if restored:
        logger.info(
            "Mirror of %s: %d member(s) missing it in Omnisend %s it back",
            members.label,
            len(restored),
            "got" if members.sends else "would get",
        )
