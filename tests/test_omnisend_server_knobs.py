"""The local server's knobs for the points where Omnisend's documentation is silent
(issue 13): the order of GET /batches and its documented filters, other integrations'
batches and traffic, the sliding window per brand, rate-limit headers (absent, Reset as
epoch, Retry-After), per-item result order and echo, and batches whose counts do not
add up. Each knob is checked over real HTTP, and through the CLI flag that sets it."""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from tests.omnisend_server import FaultRule, OmnisendServer
from tests.omnisend_server.__main__ import knobs
from tests.omnisend_server.presets import PRESETS
from tests.test_omnisend_server import KEY, Api, body, cli_server, eventually, wait_batch

CONTACTS = {"endpoint": "contacts"}


def post_batch(api: Api, emails: list[str]) -> str:
    r = api.post(
        "/batches",
        json={"method": "POST", "endpoint": "contacts", "items": [body(e) for e in emails]},
    )
    assert r.status_code == 200
    return str(r.json()["batchID"])


def listed_ids(api: Api, **params: Any) -> list[str]:
    """Every batch id GET /batches lists, following `paging.next` to the end."""
    page = api.get("/batches", params={**CONTACTS, "limit": 250, **params}).json()
    ids = [b["batchID"] for b in page["batches"]]
    while page["paging"]["next"]:
        page = api.session.get(page["paging"]["next"], timeout=5).json()
        ids += [b["batchID"] for b in page["batches"]]
    return ids


def today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


# -- GET /batches: order --------------------------------------------------------------------


@pytest.mark.parametrize("order", ["newest_first", "oldest_first", "unordered"])
def test_batch_list_order_knob(order: str) -> None:
    with OmnisendServer(api_keys=(KEY,), batch_list_order=order) as srv:
        api = Api(srv.url)
        created = [post_batch(api, [f"o{i}@example.com"]) for i in range(12)]
        first, second = listed_ids(api), listed_ids(api)
        assert first == second  # stable between calls: offset paging stays usable
        assert sorted(first) == sorted(created)
        if order == "newest_first":
            assert first == created[::-1]
        elif order == "oldest_first":
            assert first == created
        else:
            assert first not in (created, created[::-1])
        paged = listed_ids(api, limit=5)  # five pages of offset paging see each batch once
        assert paged == first


def test_unordered_listing_puts_a_new_batch_anywhere_but_keeps_the_rest_in_place() -> None:
    with OmnisendServer(api_keys=(KEY,), batch_list_order="unordered", seed=3) as srv:
        api = Api(srv.url)
        for i in range(20):
            post_batch(api, [f"u{i}@example.com"])
        before = listed_ids(api)
        newest = post_batch(api, ["late@example.com"])
        after = listed_ids(api)
        assert [b for b in after if b != newest] == before
        positions = set()
        for i in range(6):
            batch_id = post_batch(api, [f"n{i}@example.com"])
            positions.add(listed_ids(api).index(batch_id))
        assert len(positions) > 1  # not simply appended or prepended


# -- GET /batches: documented filters and paging --------------------------------------------


def test_batch_list_requires_endpoint_and_validates_every_filter() -> None:
    with OmnisendServer(api_keys=(KEY,)) as srv:
        api = Api(srv.url)
        missing = api.get("/batches")
        assert missing.status_code == 400
        problem = missing.json()
        assert missing.headers["Content-Type"].startswith("application/problem+json")
        assert problem["type"].endswith("/validation-failed")
        assert [e["field"] for e in problem["errors"]] == ["endpoint"]
        bad = {
            "status": "done",
            "dateFrom": "2026-13-01",
            "dateTo": "30.11.2026",
        }
        fields = {
            e["field"] for e in api.get("/batches", params={**CONTACTS, **bad}).json()["errors"]
        }
        assert fields == {"status", "dateFrom", "dateTo"}
        for params in (
            {"limit": 0},
            {"limit": 251},
            {"offset": -1},
            {"dateFrom": "2026-11-30", "dateTo": "2026-11-29"},
        ):
            r = api.get("/batches", params={**CONTACTS, **params})
            assert r.status_code == 400, params
        default = api.get("/batches", params=CONTACTS).json()["paging"]
        assert (default["limit"], default["offset"]) == (100, 0)
        assert api.get("/batches", params={"endpoint": "products"}).json()["batches"] == []


def test_batch_list_filters_by_status_and_whole_utc_days() -> None:
    with OmnisendServer(api_keys=(KEY,), batch_delay=0.3, foreign_batches=4) as srv:
        api = Api(srv.url)
        ours = post_batch(api, ["d@example.com"])
        yesterday = (date.fromisoformat(today()) - timedelta(days=1)).isoformat()
        assert len(listed_ids(api, dateFrom=today(), dateTo=today())) == 5
        assert len(listed_ids(api, dateFrom=today())) == 5
        assert listed_ids(api, dateTo=yesterday) == []
        assert listed_ids(api, status="pending") == [ours]
        assert len(listed_ids(api, status="finished")) == 4
        wait_batch(api, ours)
        assert listed_ids(api, status="pending") == []
        assert ours in listed_ids(api, status="finished", dateFrom=today())


def test_offset_paging_links_carry_the_filters() -> None:
    with OmnisendServer(api_keys=(KEY,), foreign_batches=7) as srv:
        api = Api(srv.url)
        page = api.get(
            "/batches", params={**CONTACTS, "status": "finished", "limit": 3, "offset": 3}
        ).json()
        assert len(page["batches"]) == 3
        paging = page["paging"]
        assert (paging["limit"], paging["offset"]) == (3, 3)
        assert "status=finished" in paging["next"] and "offset=6" in paging["next"]
        assert "endpoint=contacts" in paging["previous"] and "offset=0" in paging["previous"]
        last = api.session.get(paging["next"], timeout=5).json()
        assert len(last["batches"]) == 1 and last["paging"]["next"] is None


# -- foreign batches ---------------------------------------------------------------------------


def test_foreign_batches_made_today_push_ours_off_the_first_page() -> None:
    with OmnisendServer(
        api_keys=(KEY,), foreign_batches=300, batch_list_order="oldest_first"
    ) as srv:
        api = Api(srv.url)
        ours = post_batch(api, ["mine@example.com"])
        first = api.get("/batches", params={**CONTACTS, "limit": 250}).json()
        assert ours not in [b["batchID"] for b in first["batches"]]
        everything = listed_ids(api)
        assert len(everything) == 301 and everything[-1] == ours
        foreign = [b for b in srv.batches() if b["batchID"] != ours]
        assert all(b["status"] == "finished" for b in foreign)
        assert all(b["createdAt"][:10] == today() for b in foreign)
        assert [b["createdAt"] for b in foreign] == sorted(b["createdAt"] for b in foreign)
        with_errors = [b for b in foreign if b["errorsCount"]]
        assert 30 <= len(with_errors) <= 50  # one in seven
        assert all(b["finishedCount"] == b["totalCount"] == 5 for b in foreign)
        items = api.get(f"/batches/{with_errors[0]['batchID']}/items").json()["items"]
        assert [i["responseCode"] for i in items].count(400) == 1
        stored = [c["identifiers"][0]["id"] for c in srv.contacts()]
        assert not [e for e in stored if e.endswith("@shop-sync.example")]  # theirs: not here
        wait_batch(api, ours)
        assert srv.contact("mine@example.com") is not None


def test_foreign_batches_spread_over_several_days_answer_the_day_filters() -> None:
    with OmnisendServer(api_keys=(KEY,), foreign_batches=30, foreign_batch_days=3) as srv:
        api = Api(srv.url)
        days = [(date.fromisoformat(today()) - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
        created = [b["createdAt"][:10] for b in srv.batches()]
        assert set(created) <= set(days) and days[0] in created and days[1] in created
        per_day = [len(listed_ids(api, dateFrom=d, dateTo=d)) for d in days]
        assert per_day == [created.count(d) for d in days] and sum(per_day) == 30
        assert len(listed_ids(api, dateFrom=days[1])) == per_day[1] + per_day[2]
        assert len(listed_ids(api, dateTo=days[0])) == per_day[0]


def test_foreign_batches_keep_arriving_during_a_run_and_survive_reset() -> None:
    with OmnisendServer(
        api_keys=(KEY,), foreign_batches=2, foreign_batches_per_minute=600, batch_delay=0.05
    ) as srv:
        api = Api(srv.url)
        assert eventually(lambda: len(listed_ids(api)) >= 5, timeout=5)
        assert eventually(lambda: len(listed_ids(api, status="finished")) >= 4, timeout=5)
        srv.reset()
        assert len(srv.batches()) in (2, 3)  # re-seeded (a tick may land in between)
        assert eventually(lambda: len(listed_ids(api)) >= 4, timeout=5)


# -- sliding window per brand ------------------------------------------------------------------


def burst(api: Api, count: int) -> list[requests.Response]:
    return [api.get("/contacts") for _ in range(count)]


@pytest.mark.parametrize(("kind", "allowed_after_boundary"), [("fixed", 4), ("sliding", 1)])
def test_a_budget_spent_across_a_window_boundary(kind: str, allowed_after_boundary: int) -> None:
    """3 requests late in the first window, 4 just after it: a fixed window allows them all;
    Omnisend's sliding window (the default) still counts the 3 and allows one."""
    with OmnisendServer(
        api_keys=(KEY,), requests_per_minute=4, window_seconds=2.0, rate_limit_window=kind
    ) as srv:
        api = Api(srv.url)
        start = time.monotonic()
        assert api.get("/contacts").status_code == 200  # anchors the fixed window
        time.sleep(max(0.0, start + 1.0 - time.monotonic()))
        assert [r.status_code for r in burst(api, 3)] == [200, 200, 200]
        time.sleep(max(0.0, start + 2.1 - time.monotonic()))
        statuses = [r.status_code for r in burst(api, 4)]
        assert statuses.count(200) == allowed_after_boundary
        assert statuses.count(429) == 4 - allowed_after_boundary


def test_sliding_window_is_the_default_and_retry_after_names_the_oldest_request() -> None:
    with OmnisendServer(api_keys=(KEY,), requests_per_minute=2, window_seconds=3.0) as srv:
        api = Api(srv.url)
        assert api.get("/contacts").status_code == 200
        time.sleep(1.2)
        assert api.get("/contacts").status_code == 200
        refused = api.get("/contacts")
        assert refused.status_code == 429
        assert refused.json()["retryAfter"] == 2  # the first request leaves the window then
        assert refused.json()["type"] == "https://problems.omnisend.com/rate-limit-exceeded"
        time.sleep(1.9)
        assert api.get("/contacts").status_code == 200  # one slot freed, not the whole window
        assert api.get("/contacts").status_code == 429


def test_other_integrations_of_the_brand_eat_part_of_the_budget() -> None:
    with OmnisendServer(
        api_keys=(KEY,), requests_per_minute=10, window_seconds=1.0, foreign_requests_per_minute=5
    ) as srv:
        api = Api(srv.url)
        time.sleep(1.1)  # the other integration has been busy for a whole window
        responses = burst(api, 10)
        ok = sum(r.status_code == 200 for r in responses)
        assert 4 <= ok <= 6
        assert int(responses[0].headers["X-Rate-Limit-Remaining"]) <= 5
        assert responses[-1].status_code == 429
    with OmnisendServer(api_keys=(KEY,), requests_per_minute=10, window_seconds=1.0) as alone:
        assert all(r.status_code == 200 for r in burst(Api(alone.url), 10))


# -- rate-limit headers ------------------------------------------------------------------------


def test_rate_limit_headers_can_be_absent_while_429_still_says_when() -> None:
    with OmnisendServer(api_keys=(KEY,), requests_per_minute=1, rate_limit_headers=False) as srv:
        api = Api(srv.url)
        ok, refused = burst(api, 2)
        assert ok.status_code == 200 and refused.status_code == 429
        for r in (ok, refused):
            assert not [h for h in r.headers if h.lower().startswith("x-rate-limit")]
        assert "Retry-After" not in refused.headers
        assert 1 <= refused.json()["retryAfter"] <= 60
        srv.add_fault(FaultRule(kind="rate_limit", times=1))
        faulted = api.post("/batches", json={"method": "POST", "endpoint": "contacts"})
        assert faulted.status_code == 429 and "X-Rate-Limit-Reset" not in faulted.headers


def test_reset_header_as_an_epoch_timestamp_and_retry_after_header() -> None:
    with OmnisendServer(
        api_keys=(KEY,),
        requests_per_minute=1,
        rate_limit_reset="epoch",
        retry_after_header=True,
    ) as srv:
        api = Api(srv.url)
        ok, refused = burst(api, 2)
        now = time.time()
        reset = int(ok.headers["X-Rate-Limit-Reset"])
        assert now < reset <= now + 61  # a timestamp, ~1.8e9, not "seconds left"
        retry_after = refused.json()["retryAfter"]
        assert 1 <= retry_after <= 60  # the body stays in seconds
        assert refused.headers["Retry-After"] == str(retry_after)
        assert ok.headers.get("Retry-After") is None


# -- per-item results --------------------------------------------------------------------------


def item_emails(items: list[dict[str, Any]]) -> list[str]:
    return [i["request"]["identifiers"][0]["id"] for i in items]


@pytest.mark.parametrize("order", ["same", "reversed", "shuffled"])
def test_batch_items_order_knob(order: str) -> None:
    emails = [f"it{i}@example.com" for i in range(9)]
    with OmnisendServer(api_keys=(KEY,), items_order=order, seed=5) as srv:
        api = Api(srv.url)
        batch_id = post_batch(api, emails)
        wait_batch(api, batch_id)
        whole = api.get(f"/batches/{batch_id}/items").json()["items"]
        first = api.get(f"/batches/{batch_id}/items", params={"limit": 4}).json()
        rest = api.get(
            f"/batches/{batch_id}/items",
            params={"limit": 10, "after": first["paging"]["cursors"]["after"]},
        ).json()
        assert item_emails(first["items"] + rest["items"]) == item_emails(whole)  # stable
        expected = {"same": emails, "reversed": emails[::-1]}.get(order)
        if expected is not None:
            assert item_emails(whole) == expected
        else:
            assert sorted(item_emails(whole)) == sorted(emails)
            assert item_emails(whole) not in (emails, emails[::-1])


def test_items_without_the_echoed_request_match_only_by_the_contact_they_returned() -> None:
    with OmnisendServer(api_keys=(KEY,), items_order="reversed", echo_item_request=False) as srv:
        api = Api(srv.url)
        srv.add_fault(FaultRule(kind="item_error", email_pattern=r"^bad", status=400))
        batch_id = post_batch(api, ["good1@example.com", "bad@example.com", "good2@example.com"])
        done = wait_batch(api, batch_id)
        assert (done["finishedCount"], done["errorsCount"]) == (3, 1)
        items = api.get(f"/batches/{batch_id}/items").json()["items"]
        assert all("request" not in i for i in items)
        ok = [i["response"]["identifiers"][0]["id"] for i in items if i["responseCode"] < 300]
        assert ok == ["good2@example.com", "good1@example.com"]
        failed = [i for i in items if i["status"] == "failed"]
        assert len(failed) == 1 and failed[0]["response"]["status"] == 400
        assert "bad@example.com" not in str(failed[0])  # nothing but elimination names it


def test_inconsistent_batches_say_finished_without_processing_every_item() -> None:
    with OmnisendServer(api_keys=(KEY,), inconsistent_batches=1.0) as srv:
        api = Api(srv.url)
        batch_id = post_batch(api, ["s1@example.com", "s2@example.com", "s3@example.com"])
        done = wait_batch(api, batch_id)
        assert done["status"] == "finished" and done["errorsCount"] == 0
        assert (done["totalCount"], done["finishedCount"]) == (3, 2)
        statuses = [i["status"] for i in api.get(f"/batches/{batch_id}/items").json()["items"]]
        assert statuses == ["finished", "finished", "pending"]
        assert srv.contact("s3@example.com") is None
        srv.reset()  # a knob, not a test's fault script: reset() leaves it
        done = wait_batch(api, post_batch(api, ["t1@example.com", "t2@example.com"]))
        assert done["finishedCount"] == 1
    with OmnisendServer(api_keys=(KEY,), inconsistent_batches=0.2) as some:
        api = Api(some.url)
        finals = [wait_batch(api, post_batch(api, [f"p{i}@example.com"])) for i in range(10)]
        short = [b["finishedCount"] < b["totalCount"] for b in finals]
        assert short == [False, False, False, False, True] * 2  # evenly spread: every 5th


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_flags_set_the_knobs() -> None:
    flags = (
        "--batch-list-order=oldest_first",
        "--foreign-batches=3",
        "--no-rate-limit-headers",
        "--no-echo-item-request",
        "--items-order=reversed",
        "--rpm=2",
        "--retry-after-header",
    )
    with cli_server(*flags) as url:
        api = Api(url)
        listed = api.get("/batches", params=CONTACTS)
        assert listed.status_code == 200 and "X-Rate-Limit-Limit" not in listed.headers
        batches = listed.json()["batches"]
        assert len(batches) == 3
        assert [b["createdAt"] for b in batches] == sorted(b["createdAt"] for b in batches)
        items = api.get(f"/batches/{batches[0]['batchID']}/items")
        assert items.status_code == 200 and "request" not in items.json()["items"][0]
        refused = api.get("/batches", params=CONTACTS)
        assert refused.status_code == 429 and refused.headers["Retry-After"]


def test_batch_list_paging_knob_drops_the_paging_object_but_keeps_offset_paging() -> None:
    with OmnisendServer(api_keys=(KEY,), foreign_batches=5) as srv:
        api = Api(srv.url)
        with_paging = listed_ids(api)
    with OmnisendServer(api_keys=(KEY,), foreign_batches=5, batch_list_paging=False) as srv:
        api = Api(srv.url)
        first = api.get("/batches", params={**CONTACTS, "limit": 3}).json()
        rest = api.get("/batches", params={**CONTACTS, "limit": 3, "offset": 3}).json()
    assert "paging" not in first and "paging" not in rest
    assert len(first["batches"]) == 3 and len(rest["batches"]) == 2
    assert [b["batchID"] for b in first["batches"] + rest["batches"]] == with_paging
    assert knobs(["--no-batch-list-paging"])["batch_list_paging"] is False
    assert knobs([])["batch_list_paging"] is True


# -- presets and path patterns -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_serves_a_batch_end_to_end(name: str) -> None:
    chosen = {**PRESETS[name], "foreign_batches": min(PRESETS[name].get("foreign_batches", 0), 20)}
    with OmnisendServer(api_keys=(KEY,), **chosen) as srv:
        api = Api(srv.url)
        batch_id = post_batch(api, ["preset@example.com"])
        done = wait_batch(api, batch_id)
        assert done["status"] == "finished"
        listed = listed_ids(api)
        assert batch_id in listed
        assert len(listed) - 1 >= chosen["foreign_batches"]  # a trickle may have added more


def test_cli_preset_with_a_flag_that_overrides_it() -> None:
    assert knobs(["--preset", "hostile"])["batch_list_order"] == "unordered"
    overridden = knobs(["--preset", "hostile", "--batch-list-order", "oldest_first", "--rpm", "5"])
    assert overridden["batch_list_order"] == "oldest_first"
    assert overridden["requests_per_minute"] == 5 and overridden["echo_item_request"] is False
    assert knobs([])["batch_list_order"] == "newest_first"
    with cli_server("--preset", "busy_account_c", "--foreign-batches", "12") as url:
        api = Api(url)
        created = [b["createdAt"] for b in api.get("/batches", params=CONTACTS).json()["batches"]]
        assert len(created) == 12 and created == sorted(created)


def test_a_fault_can_target_one_sub_resource_by_path_pattern() -> None:
    with OmnisendServer(api_keys=(KEY,)) as srv:
        api = Api(srv.url)
        batch_id = post_batch(api, ["pp@example.com"])
        srv.add_fault(
            FaultRule(method="GET", path="/batches/", path_pattern=r"/items$", status=503)
        )
        assert wait_batch(api, batch_id)["status"] == "finished"  # GET /batches/{id}: untouched
        assert api.get(f"/batches/{batch_id}/items").status_code == 503
        with pytest.raises(re.error):
            FaultRule(path_pattern="(")
