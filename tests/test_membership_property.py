"""Issue 23: segment membership written as a custom property inside the batch items
(`membership_property`), instead of the segment tag and its 60/min tags endpoint.

Every test runs the real CLI against the local Omnisend-compatible server and checks
what Omnisend ends with: contacts' custom properties, the saved segment's rule, its
members as `GET /contacts?segmentID=` and statistics list them, and the requests the
server saw. Omnisend does not document whether `customProperties` in an update merges
with a contact's other custom properties or replaces them: both behaviours are run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import read_jsonl, run_target, stored_email
from tests.omnisend_server import FaultRule, OmnisendServer
from tests.test_omnisend_server import Api

DATA = Path(__file__).parent / "data_files"
FULL_20 = DATA / "pipeline" / "full_read_20.singer"
FULL_15_OF_20 = DATA / "pipeline" / "full_read_15_of_20.singer"
PROPERTY = "in_vip"  # membership_property "in_{stream_name}" for the stream "vip"
LEAVERS = {f"member{i}@example.com" for i in range(15, 20)}


def property_rule(name: str) -> list[dict[str, Any]]:
    """The documented custom-property rule (2026-03-15 Segments API)."""
    flt = {
        "operator": "equals",
        "property": "custom",
        "name": name,
        "valueType": "bool",
        "value": True,
    }
    return [{"conditions": [{"entity": "contact", "junction": "and", "filters": [flt]}]}]


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def run_ok(config: dict[str, Any], singer: Path | list[str], tmp_path: Path) -> str:
    messages = lines(singer) if isinstance(singer, Path) else singer
    run = run_target(config, messages, workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stderr


def requests_seen(server: OmnisendServer, method: str, path: str) -> int:
    return sum(1 for e in server.request_log() if e.method == method and e.path == path)


def segment_members(server: OmnisendServer, segment_id: str) -> set[str]:
    """Members as a user of Omnisend's API lists them: `GET /contacts?segmentID=`."""
    api = Api(server.url, key=API_KEY)
    reply = api.get("/contacts", params={"segmentID": segment_id, "limit": 250})
    assert reply.status_code == 200, reply.text
    return {stored_email(c) for c in reply.json()["contacts"]}


def statistics(server: OmnisendServer, segment_id: str) -> int:
    reply = Api(server.url, key=API_KEY).get(f"/segments/{segment_id}/statistics")
    assert reply.status_code == 200, reply.text
    return int(reply.json()["contactsCount"])


def summary(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(config["summary_path"]).read_text())


def test_members_carry_the_property_in_their_batch_item_and_need_no_tag_call(
    mode_server: OmnisendServer, prop_config: dict[str, Any], tmp_path: Path
) -> None:
    log = run_ok(prop_config, FULL_20, tmp_path)

    contacts = {stored_email(c): c for c in mode_server.contacts()}
    assert len(contacts) == 20
    for contact in contacts.values():
        assert contact["customProperties"][PROPERTY] is True
        assert contact["customProperties"]["loyalty_tier"] in {"gold", "silver", "platinum"}
        assert contact["tags"] == []  # no segment tag: membership is the property
    assert requests_seen(mode_server, "POST", "/contacts/tags") == 0
    assert requests_seen(mode_server, "POST", "/batches") == 1  # 20 contacts, one batch

    [segment] = mode_server.segments()
    assert segment["name"] == "vip" and segment["conditionGroups"] == property_rule(PROPERTY)
    assert segment_members(mode_server, segment["segmentID"]) == set(contacts)
    assert statistics(mode_server, segment["segmentID"]) == 20
    [reported] = summary(prop_config)["segments"]
    assert reported["action"] == "created" and reported["tag"] == f"custom:{PROPERTY}"
    assert f"property '{PROPERTY}'" in log

    # A re-run: the property is part of each fingerprint, so nothing is sent again.
    writes = requests_seen(mode_server, "POST", "/batches")
    run_ok(prop_config, FULL_20, tmp_path)
    assert requests_seen(mode_server, "POST", "/batches") == writes
    assert summary(prop_config)["streams"]["vip"]["unchanged"] == 20


def test_mirror_writes_false_to_leavers_through_batches(
    mode: str, mode_server: OmnisendServer, prop_config: dict[str, Any], tmp_path: Path
) -> None:
    prop_config |= {"sync_mode": "mirror", "mirror_confirm_runs": 2}
    run_ok(prop_config, FULL_20, tmp_path)
    [segment] = mode_server.segments()

    first_absence = run_ok(prop_config, FULL_15_OF_20, tmp_path)  # staged, not removed
    assert "0 of 20 member(s) lost it; 5 more absent" in first_absence
    assert segment_members(mode_server, segment["segmentID"]) == {
        stored_email(c) for c in mode_server.contacts()
    }

    batches_before = requests_seen(mode_server, "POST", "/batches")
    log = run_ok(prop_config, FULL_15_OF_20, tmp_path)
    assert f"Mirror of property '{PROPERTY}': 5 of 20 member(s) lost it" in log
    assert summary(prop_config)["mirror"][f"custom:{PROPERTY}"]["removed"] == 5
    contacts = {stored_email(c): c for c in mode_server.contacts()}
    for email in LEAVERS:
        assert contacts[email]["customProperties"][PROPERTY] is False
    stayers = set(contacts) - LEAVERS
    assert all(contacts[e]["customProperties"][PROPERTY] is True for e in stayers)
    assert segment_members(mode_server, segment["segmentID"]) == stayers
    assert statistics(mode_server, segment["segmentID"]) == 15
    # One batch of 5 removals; no tag endpoint at all, in any run.
    assert requests_seen(mode_server, "POST", "/batches") == batches_before + 1
    assert requests_seen(mode_server, "DELETE", "/contacts/tags") == 0
    assert requests_seen(mode_server, "POST", "/contacts/tags") == 0
    # The removal never touches the subscription status, whatever the merge mode.
    leaver = contacts["member19@example.com"]["identifiers"][0]["channels"]["email"]
    assert leaver["status"] == "nonSubscribed"
    # The removal item carries only the property: under replace, Omnisend would drop the
    # leaver's other custom properties with it (the README says so).
    kept = "loyalty_tier" in contacts["member19@example.com"]["customProperties"]
    assert kept is (mode == "merge")

    # A leaver who comes back is a member again (its fingerprint was forgotten).
    run_ok(prop_config, FULL_20, tmp_path)
    assert segment_members(mode_server, segment["segmentID"]) == set(contacts)


def test_mirror_puts_the_property_back_on_a_member_someone_unmarked_in_omnisend(
    mode_server: OmnisendServer, prop_config: dict[str, Any], tmp_path: Path
) -> None:
    """Drift repair on the property route: a person sets a present member's property to
    false in Omnisend; the next complete read writes it back (one batch, no tag call),
    counted as retagged, and nobody else is written."""
    prop_config |= {"sync_mode": "mirror", "mirror_confirm_runs": 2}
    run_ok(prop_config, FULL_20, tmp_path)
    [segment] = mode_server.segments()
    unmarked = "member3@example.com"
    edit = Api(mode_server.url, key=API_KEY).post(
        "/contacts",
        json={
            "identifiers": [{"type": "email", "id": unmarked}],
            "customProperties": {PROPERTY: False},
        },
    )
    assert edit.status_code in (200, 201), edit.text
    assert unmarked not in segment_members(mode_server, segment["segmentID"])

    batches_before = requests_seen(mode_server, "POST", "/batches")
    log = run_ok(prop_config, FULL_20, tmp_path)
    result = summary(prop_config)["mirror"][f"custom:{PROPERTY}"]
    assert (result["retagged"], result["removed"], result["staged"]) == (1, 0, 0)
    assert summary(prop_config)["streams"]["vip"]["unchanged"] == 20
    assert f"Mirror of property '{PROPERTY}': 1 member(s) missing it in Omnisend got it back" in log
    assert requests_seen(mode_server, "POST", "/batches") == batches_before + 1
    assert requests_seen(mode_server, "POST", "/contacts/tags") == 0
    assert mode_server.contact(unmarked)["customProperties"][PROPERTY] is True
    members = {f"member{i}@example.com" for i in range(20)}
    assert segment_members(mode_server, segment["segmentID"]) == members


def test_another_tools_custom_property_under_merge_and_replace(
    mode: str, mode_server: OmnisendServer, prop_config: dict[str, Any], tmp_path: Path
) -> None:
    """What Omnisend's undocumented update semantics do to a property another tool set
    on the same contact (a CRM's score): kept under merge, wiped under replace."""
    api = Api(mode_server.url, key=API_KEY)
    body = {
        "identifiers": [{"type": "email", "id": "member3@example.com"}],
        "customProperties": {"crm_score": 7},
    }
    assert api.post("/contacts", json=body).status_code == 201

    run_ok(prop_config, FULL_20, tmp_path)

    props = mode_server.contact("member3@example.com")["customProperties"]
    assert props[PROPERTY] is True and "loyalty_tier" in props
    if mode == "merge":
        assert props["crm_score"] == 7
    else:
        assert "crm_score" not in props  # replace: what the README warns about


def test_dry_run_shows_the_property_the_rule_and_the_removals(
    mode_server: OmnisendServer, prop_config: dict[str, Any], tmp_path: Path
) -> None:
    prop_config |= {"sync_mode": "mirror", "mirror_confirm_runs": 1}
    run_ok(prop_config, FULL_20, tmp_path)
    before = len(mode_server.request_log())
    dry = tmp_path / "dry.jsonl"
    log = run_ok(
        prop_config | {"dry_run": True, "dry_run_path": str(dry), "full_refresh": True},
        FULL_15_OF_20,
        tmp_path,
    )
    planned = read_jsonl(dry)
    posts = [p for p in planned if p["path"] == "/api/batches"]
    items = [item for p in posts for item in p["body"]["items"]]
    marked = [i for i in items if i["customProperties"].get(PROPERTY) is True]
    removals = [i for i in items if i["customProperties"].get(PROPERTY) is False]
    assert len(marked) == 15
    assert {i["identifiers"][0]["id"] for i in removals} == LEAVERS
    assert all(set(i) == {"identifiers", "customProperties"} for i in removals)
    # No status (channels) and never a welcome message, were the contact new to Omnisend.
    assert all(i["identifiers"][0]["sendWelcomeMessage"] is False for i in removals)
    assert not any("channels" in i["identifiers"][0] for i in removals)
    assert not [p for p in planned if "/contacts/tags" in p["path"]]
    assert "would lose it" in log
    # Nothing was written to Omnisend: only reads.
    assert all(e.method == "GET" for e in mode_server.request_log()[before:])


def test_dry_run_plans_the_property_segment(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    dry = tmp_path / "dry.jsonl"
    config |= {"membership_property": "in_{stream_name}", "dry_run": True}
    run_ok(config | {"dry_run_path": str(dry)}, FULL_20, tmp_path)
    [segment_post] = [p for p in read_jsonl(dry) if p["path"] == "/api/segments"]
    assert segment_post["body"]["conditionGroups"] == property_rule(PROPERTY)
    assert server.segments() == [] and server.contacts() == []


def test_switching_from_tag_to_property_costs_one_full_send_announced_once(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config |= {
        "fingerprint_store_path": str(tmp_path / "store.sqlite"),
        "summary_path": str(tmp_path / "summary.json"),
    }
    run_ok(config, FULL_20, tmp_path)  # membership by tag (the default)
    [segment] = server.segments()

    log = run_ok(config | {"membership_property": "in_{stream_name}"}, FULL_20, tmp_path)
    warnings = [line for line in log.splitlines() if "membership switches" in line]
    assert len(warnings) == 1
    assert "from tag 'segment:vip' to property 'in_vip'" in warnings[0]
    assert "one full send" in warnings[0]
    assert summary(config)["streams"]["vip"]["delivered"] == 20
    [after] = server.segments()  # the same segment, now following the property
    assert after["segmentID"] == segment["segmentID"]
    assert after["conditionGroups"] == property_rule(PROPERTY)
    assert segment_members(server, segment["segmentID"]) == {
        stored_email(c) for c in server.contacts()
    }

    log = run_ok(config | {"membership_property": "in_{stream_name}"}, FULL_20, tmp_path)
    assert "membership switches" not in log
    assert summary(config)["streams"]["vip"]["unchanged"] == 20


@pytest.mark.parametrize(
    ("settings", "stream", "expected"),
    [
        ({"membership_property": "in {stream_name}"}, "vip", "membership_property 'in {"),
        ({"membership_property": "in_{stream_name}"}, "vip buyers", "'in_vip buyers'"),
        ({"membership_property": "{stream_name}"}, "9lives", "must start with a letter"),
        ({"membership_property": "x" * 65}, "vip", "at most 64"),
        ({"membership_property": "firstName"}, "vip", "standard Omnisend contact field"),
        ({"membership_property": "loyalty_tier"}, "vip", "also a key of custom_properties"),
        ({"membership_property": "in_vip", "segment_tag": "seg:x"}, "vip", "both set"),
        ({"membership_property": "in_{other}"}, "vip", "only use {stream_name}"),
        (
            {"membership_property": "in_vip", "sync_mode": "mirror", "segment_name": ""},
            "vip",
            "needs a segment_name",
        ),
    ],
)
def test_a_property_name_omnisend_would_refuse_is_one_line_and_exit_2(
    server: OmnisendServer,
    config: dict[str, Any],
    tmp_path: Path,
    settings: dict[str, Any],
    stream: str,
    expected: str,
) -> None:
    messages = [line.replace('"vip"', json.dumps(stream)) for line in lines(FULL_20)]
    run = run_target(config | settings, messages, workdir=tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if "Invalid configuration" in line]
    assert len(errors) == 1 and expected in errors[0]
    assert "Traceback" not in run.stderr
    assert server.contacts() == [] and run.states == []


def test_two_streams_writing_one_property_share_its_segment_and_never_unmark_each_other(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config |= {
        "membership_property": "in_vip",  # no {stream_name}: both streams write it
        "segment_name": "VIP",
        "sync_mode": "mirror",
        "mirror_confirm_runs": 1,
        "fingerprint_store_path": str(tmp_path / "store.sqlite"),
        "summary_path": str(tmp_path / "summary.json"),
    }
    data = DATA / "pipeline" / "two_streams_one_tag.singer"
    for _ in range(2):
        run_ok(config, data, tmp_path)
        members = {stored_email(c) for c in server.contacts() if c["customProperties"]["in_vip"]}
        assert len(members) == 20
    [segment] = server.segments()
    assert segment["name"] == "VIP" and segment_members(server, segment["segmentID"]) == members
    assert summary(config)["mirror"]["custom:in_vip"] == {
        "removed": 0,
        "tagged": 20,
        "staged": 0,
        "retagged": 0,
        "held_by_other_pipelines": 0,
    }


def test_on_api_v5_the_property_is_written_without_a_segment(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config |= {"api_version": "v5", "membership_property": "in_{stream_name}"}
    log = run_ok(config, FULL_20, tmp_path)
    assert all(c["customProperties"][PROPERTY] is True for c in server.contacts())
    assert len(server.contacts()) == 20 and server.segments() == []
    assert "segment_tag is not applied" not in log  # nothing is skipped: no tag asked for


# -- the local server: custom-property rules ------------------------------------------


@pytest.mark.parametrize(
    ("value", "member"),
    [(True, True), (False, False), (1, False), ("true", False), (None, False)],
)
def test_local_server_judges_a_bool_property_rule_by_type_and_value(
    server: OmnisendServer, value: Any, member: bool
) -> None:
    """`equals true` on a bool property: the number 1 and the text "true" are not true;
    a contact without the property is no member. Statistics and `segmentID` agree."""
    api = Api(server.url, key=API_KEY)
    props = {} if value is None else {PROPERTY: value}
    body = {"identifiers": [{"type": "email", "id": "a@example.com"}], "customProperties": props}
    assert api.post("/contacts", json=body).status_code == 201
    created = api.post("/segments", json={"name": "p", "conditionGroups": property_rule(PROPERTY)})
    assert created.status_code == 201, created.text
    segment_id = created.json()["segmentID"]
    assert statistics(server, segment_id) == int(member)
    assert segment_members(server, segment_id) == ({"a@example.com"} if member else set())


def test_local_server_refuses_a_custom_rule_it_cannot_judge(server: OmnisendServer) -> None:
    api = Api(server.url, key=API_KEY)
    rule = property_rule(PROPERTY)
    flt = rule[0]["conditions"][0]["filters"][0]
    for broken in (
        {"valueType": "colour"},
        {"operator": "greaterThan"},
        {"value": "yes"},
        {"name": ""},
    ):
        bad = [{"conditions": [{"entity": "contact", "filters": [{**flt, **broken}]}]}]
        reply = api.post("/segments", json={"name": "p", "conditionGroups": bad})
        assert reply.status_code == 400, (broken, reply.text)


def test_a_removal_omnisend_refuses_is_warned_counted_and_tried_again_later(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """Attack: Omnisend refuses one leaver's `false`. The run still ends 0, the summary
    counts only confirmed removals, one warning says how many were not, and the next
    complete run (the fault gone) takes that leaver out."""
    config |= {
        "membership_property": "in_{stream_name}",
        "sync_mode": "mirror",
        "mirror_confirm_runs": 1,
        "fingerprint_store_path": str(tmp_path / "store.sqlite"),
        "summary_path": str(tmp_path / "summary.json"),
    }
    run_ok(config, FULL_20, tmp_path)
    server.add_fault(FaultRule(kind="item_error", email_pattern=r"^member17@", status=400))
    log = run_ok(config, FULL_15_OF_20, tmp_path)
    assert summary(config)["mirror"][f"custom:{PROPERTY}"]["removed"] == 4
    [warning] = [line for line in log.splitlines() if "did not confirm" in line]
    assert "1 of 5 removal(s)" in warning and "member17" not in warning
    assert server.contact("member17@example.com")["customProperties"][PROPERTY] is True

    server.clear_faults()
    run_ok(config, FULL_15_OF_20, tmp_path)
    assert server.contact("member17@example.com")["customProperties"][PROPERTY] is False


def test_switching_back_from_property_to_tag_is_announced_the_same_way(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config |= {"fingerprint_store_path": str(tmp_path / "store.sqlite")}
    run_ok(config | {"membership_property": "in_{stream_name}"}, FULL_20, tmp_path)
    log = run_ok(config, FULL_20, tmp_path)
    [warning] = [line for line in log.splitlines() if "membership switches" in line]
    assert "from property 'in_vip' to tag 'segment:vip'" in warning
    [segment] = server.segments()
    assert segment["conditionGroups"][0]["conditions"][0]["filters"][0]["property"] == "tags"
    assert all("segment:vip" in c["tags"] for c in server.contacts())


def test_a_hand_made_segment_with_the_name_keeps_its_rule_and_mirror_removes_nothing(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """Attack: a marketer's own segment already has the name. It is left alone, so no
    segment follows the property: mirror cannot list the members and removes nothing,
    saying why, run after run."""
    hand_made = server.add_segment("vip", ["newsletter"])
    config |= {
        "membership_property": "in_{stream_name}",
        "sync_mode": "mirror",
        "mirror_confirm_runs": 1,
        "fingerprint_store_path": str(tmp_path / "store.sqlite"),
    }
    run_ok(config, FULL_20, tmp_path)
    for _ in range(2):
        log = run_ok(config, FULL_15_OF_20, tmp_path)
        assert f"Mirror of property '{PROPERTY}' removed nothing: no saved segment" in log
        assert "has another rule and is left alone" in log
    [segment] = server.segments()
    assert segment["segmentID"] == hand_made["segmentID"]
    assert segment["conditionGroups"] == hand_made["conditionGroups"]
    assert all(c["customProperties"][PROPERTY] is True for c in server.contacts())
