"""The local server's Segments resource (issue 12), over real HTTP, against
/work/shared/omnisend-api.md "Segments": create/read/replace/delete, validation problems,
409 while building, cursor paging with sort and direction, statistics computed from the
contacts' tags (with a lag knob), the 15/min write budget of its own, 403 for keys
without the scope, a POST that times out yet creates the segment, and v5's 404."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.omnisend_server import FaultRule, OmnisendServer
from tests.test_omnisend_server import KEY, Api, body, cli_server, eventually


def rule(*tags: str, operator: str = "anyOf") -> list[dict[str, Any]]:
    flt = {"operator": operator, "property": "tags", "value": list(tags)}
    return [{"conditions": [{"entity": "contact", "junction": "and", "filters": [flt]}]}]


def segment(name: str, *tags: str) -> dict[str, Any]:
    return {"name": name, "conditionGroups": rule(*tags)}


def ready(api: Api, segment_id: str) -> dict[str, Any]:
    return eventually(
        lambda: (s := api.get(f"/segments/{segment_id}").json())["status"] == "ready" and s
    )


def tag(api: Api, tags: list[str], emails: list[str], method: str = "post") -> None:
    r = getattr(api, method)("/contacts/tags", json={"tags": tags, "emails": emails})
    assert r.status_code == 202


def members(api: Api, segment_id: str) -> int:
    return int(api.get(f"/segments/{segment_id}/statistics").json()["contactsCount"])


@pytest.fixture
def srv() -> Iterator[OmnisendServer]:
    with OmnisendServer(api_keys=(KEY,), segment_build_seconds=0.2) as server:
        yield server


@pytest.fixture
def api(srv: OmnisendServer) -> Api:
    return Api(srv.url)


def test_create_read_and_statistics_follow_the_tags(api: Api, srv: OmnisendServer) -> None:
    for i in range(5):
        api.post("/contacts", json=body(f"m{i}@example.com"))
    tag(api, ["segment:vip"], [f"m{i}@example.com" for i in range(3)])
    created = api.post("/segments", json=segment("VIP buyers", "segment:vip"))
    assert created.status_code == 201
    seg = created.json()
    assert re.fullmatch(r"[0-9a-f]{24}", seg["segmentID"]) and "id" not in seg
    assert seg["name"] == "VIP buyers" and seg["conditionGroups"] == rule("segment:vip")
    assert seg["status"] == "building" and seg["isStarred"] is False
    assert seg["archivedAt"] is None and seg["createdAt"] == seg["updatedAt"]
    assert "contactsCount" not in seg  # statistics have it, the segment does not
    assert ready(api, seg["segmentID"])["name"] == "VIP buyers"
    assert eventually(lambda: members(api, seg["segmentID"]) == 3)
    tag(api, ["segment:vip"], ["m0@example.com"], method="delete")
    assert eventually(lambda: members(api, seg["segmentID"]) == 2)
    assert srv.segment_members(seg["segmentID"]) == 2
    assert [s["segmentID"] for s in srv.segments()] == [seg["segmentID"]]
    in_segment = api.get("/contacts", params={"segmentID": seg["segmentID"]}).json()
    assert sorted(c["identifiers"][0]["id"] for c in in_segment["contacts"]) == [
        "m1@example.com",
        "m2@example.com",
    ]


def test_rules_none_of_or_junction_and_or_between_groups(api: Api) -> None:
    tagged = {"a@example.com": ["x"], "b@example.com": ["y"], "c@example.com": ["x", "y"]}
    for email, tags in tagged.items():
        api.post("/contacts", json=body(email))
        tag(api, tags, [email])
    api.post("/contacts", json=body("none@example.com"))
    x_not_y = [
        {
            "conditions": [
                {"entity": "contact", "filters": rule("x")[0]["conditions"][0]["filters"]},
                {
                    "entity": "contact",
                    "filters": rule("y", operator="noneOf")[0]["conditions"][0]["filters"],
                },
            ]
        }
    ]
    either = rule("x", "y")
    x_or_y_junction = [
        {
            "conditions": [
                {
                    "entity": "contact",
                    "junction": "or",
                    "filters": [
                        {"operator": "anyOf", "property": "tags", "value": ["x"]},
                        {"operator": "anyOf", "property": "tags", "value": ["y"]},
                    ],
                }
            ]
        }
    ]
    groups_or = rule("x", operator="noneOf") + rule("x", "y", operator="noneOf")
    expected = {"x-not-y": (x_not_y, 1), "either": (either, 3), "junction": (x_or_y_junction, 3)}
    expected["groups"] = (groups_or, 2)  # b (no x) and the untagged one
    for name, (groups, count) in expected.items():
        created = api.post("/segments", json={"name": name, "conditionGroups": groups}).json()
        assert eventually(lambda s=created["segmentID"], c=count: members(api, s) == c), name


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, {"name", "conditionGroups"}),
        ({"name": "  ", "conditionGroups": rule("t")}, {"name"}),
        ({"name": "x" * 257, "conditionGroups": rule("t")}, {"name"}),
        ({"name": "ok", "conditionGroups": []}, {"conditionGroups"}),
        (
            {"name": "ok", "conditionGroups": [{"conditions": []}]},
            {"conditionGroups[0].conditions"},
        ),
        (
            {"name": "ok", "conditionGroups": rule("t", operator="allOf")},
            {"conditionGroups[0].conditions[0].filters[0].operator"},
        ),
        (
            {"name": "ok", "conditionGroups": rule()},
            {"conditionGroups[0].conditions[0].filters[0].value"},
        ),
        ({"name": "ok", "conditionGroups": rule("t"), "color": "red"}, {"color"}),
        ({"name": "ok", "conditionGroups": rule("t"), "isStarred": "yes"}, {"isStarred"}),
    ],
)
def test_invalid_segment_bodies_are_validation_problems(
    api: Api, srv: OmnisendServer, payload: dict, fields: set[str]
) -> None:
    r = api.post("/segments", json=payload)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == "https://problems.omnisend.com/validation-failed"
    assert {e["field"] for e in problem["errors"]} == fields
    assert srv.segments() == []


def test_name_of_256_characters_and_read_only_fields_from_a_get_are_accepted(api: Api) -> None:
    created = api.post("/segments", json=segment("n" * 256, "t")).json()
    copy = {**ready(api, created["segmentID"]), "name": "renamed"}
    assert api.put(f"/segments/{created['segmentID']}", json=copy).status_code == 200


def test_put_replaces_whole_segment_and_409_while_building(api: Api) -> None:
    seg = api.post("/segments", json=segment("Old", "old")).json()
    path = f"/segments/{seg['segmentID']}"
    busy = api.put(path, json=segment("New", "new"))
    assert busy.status_code == 409 and busy.json()["status"] == 409
    assert api.delete(path).status_code == 409
    ready(api, seg["segmentID"])
    assert api.put(path, json={"name": "New"}).status_code == 400  # full replace: both needed
    replaced = api.put(path, json=segment("New", "new"))
    assert replaced.status_code == 200
    after = replaced.json()
    assert after["name"] == "New" and after["conditionGroups"] == rule("new")
    assert after["status"] == "building" and after["createdAt"] == seg["createdAt"]
    assert api.delete(path).status_code == 409
    ready(api, seg["segmentID"])
    gone = api.delete(path)
    assert gone.status_code == 204 and gone.content == b""
    missing = api.get(path)
    assert missing.status_code == 404
    assert missing.json()["type"] == "https://problems.omnisend.com/not-found"
    assert api.get(f"{path}/statistics").status_code == 404
    assert api.get("/segments/not-a-segment-id").status_code == 400
    assert api.patch(path, json={}).status_code == 405


def test_list_pages_by_cursor_with_sort_and_direction(api: Api, srv: OmnisendServer) -> None:
    names = [f"seg-{i:02d}" for i in range(23)]
    for name in names[::2] + names[1::2]:  # created out of name order
        srv.add_segment(name, ["t"])
    created = [s["name"] for s in srv.segments()]

    def walk(**params: Any) -> list[str]:
        page = api.get("/segments", params=params).json()
        seen = [s["name"] for s in page["segments"]]
        assert page["paging"]["limit"] == params.get("limit", 10)
        while page["paging"]["hasMore"]:
            page = api.get(
                "/segments", params={**params, "after": page["paging"]["cursors"]["after"]}
            ).json()
            seen += [s["name"] for s in page["segments"]]
        return seen

    assert walk() == created[::-1]  # default: createdAt, desc, 10 a page
    assert walk(direction="asc", limit=7) == created
    assert walk(sort="name", direction="asc", limit=50) == sorted(names)
    assert walk(sort="name", limit=4) == sorted(names, reverse=True)
    by_name = {"sort": "name", "direction": "asc", "limit": 5}
    first = api.get("/segments", params=by_name).json()
    assert first["paging"]["cursors"]["before"] is None
    after = {**by_name, "after": first["paging"]["cursors"]["after"]}
    second = api.get("/segments", params=after).json()
    assert [s["name"] for s in second["segments"]] == sorted(names)[5:10]
    before = {**by_name, "before": second["paging"]["cursors"]["before"]}
    back = api.get("/segments", params=before).json()
    assert [s["name"] for s in back["segments"]] == sorted(names)[:5]
    assert not back["paging"]["hasMore"]
    for bad in (
        {"limit": 51},
        {"limit": 0},
        {"sort": "updatedAt"},
        {"direction": "up"},
        {"after": "zzz"},
    ):
        assert api.get("/segments", params=bad).status_code == 400, bad


def test_names_are_not_unique_and_hand_made_segments_are_listed(
    api: Api, srv: OmnisendServer
) -> None:
    hand_made = srv.add_segment("VIP", ["someone-else"])
    first = api.post("/segments", json=segment("VIP", "segment:vip")).json()
    second = api.post("/segments", json=segment("VIP", "segment:vip")).json()
    listed = api.get("/segments", params={"limit": 50}).json()["segments"]
    assert [s["segmentID"] for s in listed if s["name"] == "VIP"] == [
        second["segmentID"],
        first["segmentID"],
        hand_made["segmentID"],
    ]
    assert hand_made["status"] == "ready"
    assert api.get(f"/segments/{hand_made['segmentID']}").json()["conditionGroups"] == rule(
        "someone-else"
    )


def test_writes_have_their_own_small_budget_with_retry_after() -> None:
    with OmnisendServer(
        api_keys=(KEY,), segment_writes_per_minute=2, requests_per_minute=100
    ) as srv:
        api = Api(srv.url)
        assert [
            api.post("/segments", json=segment(f"s{i}", "t")).status_code for i in range(2)
        ] == [201, 201]
        refused = api.post("/segments", json=segment("s2", "t"))
        assert refused.status_code == 429
        assert 50 <= refused.json()["retryAfter"] <= 60
        assert refused.headers["X-Rate-Limit-Limit"] == "2"
        assert api.get("/segments").status_code == 200  # reads: a budget of their own
        assert api.get("/segments").headers["X-Rate-Limit-Limit"] == "100"
        assert api.get("/contacts").headers["X-Rate-Limit-Remaining"] == "99"  # nor default's
        assert len(srv.segments()) == 2


def test_default_segment_budgets_are_15_writes_and_100_reads(api: Api) -> None:
    write = api.post("/segments", json=segment("s", "t"))
    assert write.headers["X-Rate-Limit-Limit"] == "15"
    assert api.get("/segments").headers["X-Rate-Limit-Limit"] == "100"


def test_keys_without_segment_scopes_get_403_naming_the_scope() -> None:
    with OmnisendServer(
        api_keys=(KEY,), api_key_scopes={"read-only": ["segments.read"], "contacts-only": []}
    ) as srv:
        read_only, contacts_only = Api(srv.url, key="read-only"), Api(srv.url, key="contacts-only")
        assert read_only.get("/segments").status_code == 200
        denied = read_only.post("/segments", json=segment("S", "t"))
        assert denied.status_code == 403
        assert "segments.write" in denied.json()["detail"]
        assert denied.json()["type"] == "https://problems.omnisend.com/forbidden"
        assert contacts_only.get("/segments").status_code == 403
        assert "segments.read" in contacts_only.get("/segments").json()["detail"]
        assert contacts_only.post("/contacts", json=body("still@example.com")).status_code == 201
        assert Api(srv.url).post("/segments", json=segment("S", "t")).status_code == 201
        assert [s["name"] for s in srv.segments()] == ["S"]


def test_statistics_lag_behind_tag_changes() -> None:
    with OmnisendServer(api_keys=(KEY,), segment_stats_lag=0.6) as srv:
        api = Api(srv.url)
        api.post("/contacts", json=body("late@example.com"))
        seg = api.post("/segments", json=segment("Lagging", "t")).json()
        tag(api, ["t"], ["late@example.com"])
        assert eventually(lambda: "t" in srv.contact("late@example.com")["tags"])
        assert members(api, seg["segmentID"]) == 0  # not yet counted
        assert eventually(lambda: members(api, seg["segmentID"]) == 1, timeout=3)
        tag(api, ["t"], ["late@example.com"], method="delete")
        assert eventually(lambda: "t" not in srv.contact("late@example.com")["tags"])
        assert members(api, seg["segmentID"]) == 1
        assert eventually(lambda: members(api, seg["segmentID"]) == 0, timeout=3)


def test_a_timed_out_post_still_creates_the_segment_once() -> None:
    with OmnisendServer(
        api_keys=(KEY,), slow_segment_posts=1, slow_segment_post_seconds=1.0
    ) as srv:
        api = Api(srv.url)
        srv.clear_faults()  # disarms a test's rules, not the knob's
        with pytest.raises(requests.Timeout):
            api.post("/segments", json=segment("Slow", "t"), timeout=0.3)
        listed = api.get("/segments").json()["segments"]
        assert [s["name"] for s in listed] == ["Slow"]  # there already: look it up first
        started = time.monotonic()
        assert api.post("/segments", json=segment("Fast", "t"), timeout=0.9).status_code == 201
        assert time.monotonic() - started < 0.9


def test_tags_by_segment_id_reach_its_members(api: Api) -> None:
    for email in ("in@example.com", "out@example.com"):
        api.post("/contacts", json=body(email))
    tag(api, ["vip"], ["in@example.com"])
    seg = api.post("/segments", json=segment("VIP", "vip")).json()
    r = api.post("/contacts/tags", json={"tags": ["promo"], "segmentID": seg["segmentID"]})
    assert r.status_code == 202
    promo = eventually(lambda: api.get("/contacts", params={"tag": "promo"}).json()["contacts"])
    assert [c["identifiers"][0]["id"] for c in promo] == ["in@example.com"]


def test_v5_has_no_segments(srv: OmnisendServer) -> None:
    v5 = Api(srv.url, generation="v5")
    assert v5.get("/segments").status_code == 404
    assert v5.post("/segments", json=segment("S", "t")).status_code == 404
    assert srv.segments() == []


def test_cli_flags_for_segments() -> None:
    flags = (
        "--api-key-scopes=ro=segments.read",
        "--segment-writes-rpm=1",
        "--segment-build-seconds=5",
        "--slow-segment-posts=1",
        "--slow-segment-post-seconds=0.5",
    )
    with cli_server(*flags) as url:
        api = Api(url)
        with pytest.raises(requests.Timeout):
            api.post("/segments", json=segment("Slow", "t"), timeout=0.2)
        listed = eventually(lambda: api.get("/segments").json()["segments"])
        assert listed[0]["status"] == "building"  # 5 s of building
        assert api.delete(f"/segments/{listed[0]['segmentID']}").status_code == 409
        assert api.post("/segments", json=segment("Again", "t")).status_code == 429
        assert Api(url, key="ro").post("/segments", json=segment("S", "t")).status_code == 403


def test_other_integrations_spend_part_of_the_segment_write_budget() -> None:
    with OmnisendServer(
        api_keys=(KEY,),
        segment_writes_per_minute=4,
        foreign_segment_writes_per_minute=2,
        window_seconds=1.0,
    ) as srv:
        time.sleep(1.05)  # a whole window of the other integration's writes
        api = Api(srv.url)
        statuses = [api.post("/segments", json=segment(f"s{i}", "t")).status_code for i in range(4)]
        assert statuses.count(201) == 2 and statuses[-1] == 429
        assert len(srv.segments()) == 2


def test_statistics_can_be_made_slow_to_answer() -> None:
    with OmnisendServer(api_keys=(KEY,)) as srv:
        api = Api(srv.url)
        seg = api.post("/segments", json=segment("S", "t")).json()
        srv.add_fault(
            FaultRule(
                method="GET", path_pattern=r"^/segments/\w+/statistics$", kind="delay", seconds=0.6
            )
        )
        assert api.get(f"/segments/{seg['segmentID']}", timeout=0.4).status_code == 200
        with pytest.raises(requests.Timeout):
            api.get(f"/segments/{seg['segmentID']}/statistics", timeout=0.3)
