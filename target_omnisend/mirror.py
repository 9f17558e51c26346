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
) -> MirrorDecision:
    """Pure: absent members are removed once absent `confirm_runs` runs in a row, unless
    this run's absent share exceeds `max_ratio` (then nothing at all changes)."""
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
        runs = runs if last_run == run_id else runs + 1
        if runs >= confirm_runs:
            remove.append(email)
        else:
            staged[email] = runs
    return MirrorDecision(remove=remove, staged=staged)


def _member_key(email: str) -> str:
    """How the run's members were recorded: normalised. A contact Omnisend lists as
    `Jane@X.com` (another tool, or an export before lower-casing) is the member
    `jane@x.com`; if she is present it keeps the tag (the safe direction)."""
    key = normalize_email(email)
    return key if isinstance(key, str) else email


def mirror_tag(
    tag: str,
    *,
    present: Container[str],
    members: Members,
    store: FingerprintStore,
    run_id: str,
    max_ratio: float,
    confirm_runs: int,
    logger: logging.Logger,
) -> dict[str, Any]:
    """List who carries `tag` (the membership key), decide, act (or, for a dry-run
    writer, write the plan)."""
    tagged = 0
    absent: list[str] = []
    for email in members.listed():
        tagged += 1
        if _member_key(email) not in present:
            absent.append(email)  # removed by the identity Omnisend listed
    decision = decide(
        tagged,
        absent,
        store.absences(tag, absent),
        run_id,
        max_ratio=max_ratio,
        confirm_runs=confirm_runs,
    )
    if decision.refused:
        logger.warning("Mirror of %s removed nothing: %s", members.label, decision.refused)
        return {"removed": 0, "tagged": tagged, "skipped": decision.refused}
    # Forget first: if the untag is applied but its answer is lost (the run then fails),
    # a member who comes back must be sent and tagged again, not skipped as unchanged.
    store.forget_tagged(tag, decision.remove)
    store.record_absences(tag, decision.staged, run_id)
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
        "Mirror of %s: %d of %d member(s) %s it; %d more absent, kept "
        "until absent from %d complete run(s) in a row (mirror_confirm_runs)",
        members.label,
        len(decision.remove),
        tagged,
        verb,
        len(decision.staged),
        confirm_runs,
    )
    return {"removed": confirmed, "tagged": tagged, "staged": len(decision.staged)}
