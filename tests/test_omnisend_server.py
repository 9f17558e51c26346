"""The local Omnisend-compatible server, checked over real HTTP against the documented API
(/work/shared/omnisend-api.md): auth and versions, contact upsert rules, filters and
paging, tags, asynchronous batches, rate limits, every fault kind, and the v5 dialect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.omnisend_server import FaultRule, OmnisendServer

KEY = "test-key"
OTHER_KEY = "other-key"
VERSION = "2026-03-15"
REPO = Path(__file__).resolve().parent.parent
CONTACTS = {"endpoint": "contacts"}  # GET /batches requires the endpoint filter


class Api:
    """A thin requests session for one generation and key."""

    def __init__(self, url: str, key: str = KEY, generation: str = VERSION) -> None:
        self.session = requests.Session()
        root = "/v5" if generation == "v5" else "/api"
        self.base = url + root
        if generation == "v5":
            self.session.headers["X-API-KEY"] = key
        else:
            self.session.headers["Authorization"] = f"Omnisend-API-Key {key}"
            self.session.headers["Omnisend-Version"] = generation

    def __getattr__(self, method: str) -> Any:
        def call(path: str, **kwargs: Any) -> requests.Response:
            kwargs.setdefault("timeout", 5)
            return self.session.request(method.upper(), self.base + path, **kwargs)

        return call


def body(email: str, status: str | None = None, at: str | None = None, **fields: Any) -> dict:
    ident: dict[str, Any] = {"type": "email", "id": email}
    if status:
        ident["channels"] = {"email": {"status": status, **({"statusChangedAt": at} if at else {})}}
    return {"identifiers": [ident], **fields}


def email_channel(contact: dict) -> dict:
    ident = next(i for i in contact["identifiers"] if i["type"] == "email")
    return ident["channels"]["email"]


def wait_batch(api: Api, batch_id: str, until: tuple[str, ...] = ("finished", "stopped")) -> dict:
    deadline = time.monotonic() + 5
    while True:
        batch = api.get(f"/batches/{batch_id}").json()
        if batch["status"] in until or time.monotonic() > deadline:
            return batch
        time.sleep(0.02)


def eventually(check: Any, timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@contextmanager
def cli_server(*flags: str) -> Iterator[str]:
    """`python -m tests.omnisend_server` with `flags`: yields the URL from its one line of
    output, then stops it with SIGTERM, which must end it cleanly with nothing more said."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.omnisend_server", "--port", "0", "--api-key", KEY, *flags],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("OMNISEND_SERVER_URL=http://127.0.0.1:"), proc.stderr.read()
        yield line.split("=", 1)[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == ""  # exactly one line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def srv() -> Iterator[OmnisendServer]:
    with OmnisendServer(api_keys=(KEY, OTHER_KEY), batch_delay=0.05) as server:
        yield server


@pytest.fixture
def api(srv: OmnisendServer) -> Api:
    return Api(srv.url)


# -- auth and versions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Omnisend-Version": VERSION},
        {"Omnisend-Version": VERSION, "Authorization": "Omnisend-API-Key wrong"},
        {"Omnisend-Version": VERSION, "Authorization": f"Bearer {KEY}"},
        {"Omnisend-Version": VERSION, "X-API-KEY": KEY},  # the v5 header is not enough
    ],
)
def test_missing_or_wrong_key_is_a_401_problem(srv: OmnisendServer, headers: dict) -> None:
    r = requests.get(f"{srv.url}/api/contacts", headers=headers, timeout=5)
    assert r.status_code == 401
    assert r.headers["Content-Type"].startswith("application/problem+json")
    problem = r.json()
    assert {"type", "title", "status", "detail", "instance"} <= problem.keys()
    assert problem["status"] == 401 and problem["instance"] == "/api/contacts"
    assert "X-Rate-Limit-Limit" not in r.headers
    assert srv.count(status=401) == 1


@pytest.mark.parametrize(
    ("version", "status"), [(None, 400), ("2099-01-01", 400), ("v5", 400), ("2024-01-01", 410)]
)
def test_version_header_missing_or_unknown_is_400_and_retired_is_410(
    srv: OmnisendServer, version: str | None, status: int
) -> None:
    headers = {"Authorization": f"Omnisend-API-Key {KEY}"}
    if version:
        headers["Omnisend-Version"] = version
    r = requests.post(f"{srv.url}/api/contacts", json=body("a@example.com"), headers=headers)
    assert r.status_code == status
    assert r.json()["status"] == status
    assert srv.contacts() == []


def test_unknown_path_is_404_and_wrong_method_is_405(api: Api, srv: OmnisendServer) -> None:
    assert api.get("/nothing-here").status_code == 404
    assert requests.get(f"{srv.url}/v4/contacts", timeout=5).status_code == 404
    r = api.delete("/contacts")
    assert r.status_code == 405 and r.json()["status"] == 405
    assert "POST" in r.headers["Allow"]
    assert api.put("/batches/abc").status_code == 405


# -- contacts ----------------------------------------------------------------------------


def test_upsert_creates_201_then_updates_200_by_exact_email(api: Api, srv: OmnisendServer) -> None:
    first = api.post("/contacts", json=body("Upper@X.com", firstName="Ann"))
    assert first.status_code == 201
    created = first.json()
    assert len(created["id"]) == 24 and int(created["id"], 16) >= 0
    assert {"createdAt", "updatedAt", "identifiers", "tags"} <= created.keys()

    again = api.post("/contacts", json=body("Upper@X.com", lastName="Lee"))
    assert again.status_code == 200
    assert again.json()["id"] == created["id"]
    assert again.json()["firstName"] == "Ann" and again.json()["lastName"] == "Lee"

    other = api.post("/contacts", json=body("upper@x.com"))
    assert other.status_code == 201 and other.json()["id"] != created["id"]
    assert len(srv.contacts()) == 2
    assert srv.contact("Upper@X.com")["lastName"] == "Lee"
    assert "firstName" not in srv.contact("upper@x.com")
    assert srv.contact("UPPER@X.COM") is None


def test_new_contact_without_status_is_non_subscribed(api: Api) -> None:
    contact = api.post("/contacts", json=body("n@example.com")).json()
    assert email_channel(contact)["status"] == "nonSubscribed"
    assert email_channel(contact)["statusChangedAt"]


def test_validation_problem_lists_every_bad_field(api: Api, srv: OmnisendServer) -> None:
    bad = {
        "identifiers": [
            {"type": "email", "id": "not-an-email"},
            {"type": "phone", "id": "+37060000000", "channels": {"sms": {"status": "maybe"}}},
        ],
        "countryCode": "us",
        "birthdate": "1990-13-01",
        "gender": "female",
        "tags": [f"t{i}" for i in range(101)],
        "favouriteColour": "blue",
    }
    r = api.post("/contacts", json=bad)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/problem+json")
    problem = r.json()
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {
        "identifiers[0].id",
        "identifiers[1].channels.sms.status",
        "countryCode",
        "birthdate",
        "gender",
        "tags",
        "favouriteColour",
    }
    assert all(e["code"] and e["message"] for e in problem["errors"])
    assert srv.contacts() == []


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"identifiers": []},
        body("a@example.com", birthdate="01/02/1990"),
        body("a@example.com", postalCode=12345),
        body("a@example.com", customProperties={"nested": {"no": 1}}),
        body(" a@example.com"),
        body("a@@example.com"),
        {"identifiers": [{"type": "email", "id": "a@example.com", "channels": {"sms": {}}}]},
        body("a@example.com", "subscribed", "yesterday"),
    ],
)
def test_invalid_contact_bodies_are_refused(api: Api, payload: dict) -> None:
    r = api.post("/contacts", json=payload)
    assert r.status_code == 400, r.text
    assert r.json()["errors"]


def test_update_changes_only_sent_fields_tags_replace_properties_merge(api: Api) -> None:
    api.post(
        "/contacts",
        json=body(
            "m@example.com",
            firstName="Mia",
            city="Vilnius",
            tags=["a", "b"],
            customProperties={"tier": "gold", "ltv": 10},
        ),
    )
    updated = api.post(
        "/contacts",
        json=body("m@example.com", city="Kaunas", tags=["c"], customProperties={"ltv": 20}),
    ).json()
    assert updated["firstName"] == "Mia"
    assert updated["city"] == "Kaunas"
    assert updated["tags"] == ["c"]  # a body `tags` replaces
    assert updated["customProperties"] == {"tier": "gold", "ltv": 20}
    kept = api.post("/contacts", json=body("m@example.com")).json()
    assert kept["tags"] == ["c"]  # no `tags` in the body: untouched


def test_email_status_keeps_the_latest_timestamp(api: Api, srv: OmnisendServer) -> None:
    api.post("/contacts", json=body("s@example.com", "subscribed", "2025-06-01T00:00:00Z"))
    older = api.post(
        "/contacts", json=body("s@example.com", "unsubscribed", "2025-01-01T00:00:00Z")
    )
    assert older.status_code == 200
    assert email_channel(srv.contact("s@example.com"))["status"] == "subscribed"

    newer = body("s@example.com", "unsubscribed", "2025-07-01T10:00:00+02:00")
    api.post("/contacts", json=newer)
    channel = email_channel(srv.contact("s@example.com"))
    assert channel == {"status": "unsubscribed", "statusChangedAt": "2025-07-01T08:00:00Z"}

    api.post("/contacts", json=body("s@example.com", firstName="NoStatus"))
    assert email_channel(srv.contact("s@example.com"))["status"] == "unsubscribed"


def test_welcome_message_follows_send_welcome_message_and_its_defaults(
    api: Api, srv: OmnisendServer
) -> None:
    quiet = body("quiet@example.com", "subscribed")
    quiet["identifiers"][0]["sendWelcomeMessage"] = False
    api.post("/contacts", json=quiet)
    api.post("/contacts", json=body("loud@example.com", "subscribed"))  # default: true
    api.post("/contacts", json=body("loud@example.com", "subscribed"))  # already subscribed
    api.post("/contacts", json=body("plain@example.com"))  # not subscribed
    Api(srv.url, generation="v5").post(
        "/contacts",
        json={
            "identifiers": [
                {
                    "type": "email",
                    "id": "v5@example.com",
                    "channels": {"email": {"status": "subscribed"}},
                }
            ]
        },
    )  # v5 default: false
    assert srv.welcome_messages() == ["loud@example.com"]
    bad = body("x@example.com")
    bad["identifiers"][0]["sendWelcomeMessage"] = "yes"
    assert api.post("/contacts", json=bad).status_code == 400


def test_phone_of_another_contact_is_ignored(api: Api, srv: OmnisendServer) -> None:
    one = body("one@example.com")
    one["identifiers"].append({"type": "phone", "id": "+37060000001"})
    api.post("/contacts", json=one)
    two = body("two@example.com")
    two["identifiers"].append({"type": "phone", "id": "+37060000001"})
    assert api.post("/contacts", json=two).status_code == 201
    assert [i["type"] for i in srv.contact("two@example.com")["identifiers"]] == ["email"]
    phones = [
        i["id"] for i in srv.contact("one@example.com")["identifiers"] if i["type"] == "phone"
    ]
    assert phones == ["+37060000001"]


def test_patch_updates_only_sent_fields_and_email_cannot_change(
    api: Api, srv: OmnisendServer
) -> None:
    contact = api.post("/contacts", json=body("p@example.com", firstName="P", city="Riga")).json()

    by_email = api.patch("/contacts", params={"email": "p@example.com"}, json={"city": "Tartu"})
    assert by_email.status_code == 200
    assert by_email.json()["firstName"] == "P" and by_email.json()["city"] == "Tartu"

    by_id = api.patch(f"/contacts/{contact['id']}", json={"lastName": "Q", "tags": ["x"]})
    assert by_id.status_code == 200 and by_id.json()["lastName"] == "Q"
    assert srv.contact("p@example.com")["tags"] == ["x"]

    moved = api.patch(f"/contacts/{contact['id']}", json=body("new@example.com"))
    assert moved.status_code == 400
    assert moved.json()["errors"][0]["field"] == "identifiers[0].id"
    assert srv.contact("new@example.com") is None

    assert api.patch("/contacts", params={"email": "P@example.com"}, json={}).status_code == 404
    assert api.patch("/contacts/" + "0" * 24, json={"city": "X"}).status_code == 404
    assert api.patch(f"/contacts/{contact['id']}", json={"gender": "x"}).status_code == 400
    assert api.get(f"/contacts/{contact['id']}").json()["city"] == "Tartu"
    assert api.get("/contacts/" + "f" * 24).status_code == 404


def test_list_filters_and_cursor_paging_over_more_than_250(api: Api) -> None:
    items = [
        body(f"c{i:03d}@example.com", "subscribed" if i % 3 == 0 else None, tags=[f"g{i % 2}"])
        for i in range(300)
    ]
    for start in range(0, 300, 100):
        batch = api.post(
            "/batches",
            json={"method": "POST", "endpoint": "contacts", "items": items[start : start + 100]},
        ).json()
        assert wait_batch(api, batch["batchID"])["errorsCount"] == 0

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 250}
    pages = 0
    while True:
        page = api.get("/contacts", params=params).json()
        pages += 1
        seen += [c["identifiers"][0]["id"] for c in page["contacts"]]
        if not page["paging"]["hasMore"]:
            assert page["paging"]["cursors"]["after"] is None
            break
        params = {"limit": 250, "after": page["paging"]["cursors"]["after"]}
    assert pages == 2
    assert seen == [f"c{i:03d}@example.com" for i in range(300)]

    tagged = api.get("/contacts", params={"tag": "g1", "limit": 250}).json()
    assert len(tagged["contacts"]) == 150 and not tagged["paging"]["hasMore"]
    subscribed = api.get("/contacts", params={"status": "subscribed", "limit": 250}).json()
    assert len(subscribed["contacts"]) == 100
    one = api.get("/contacts", params={"email": "c007@example.com"}).json()["contacts"]
    assert [c["identifiers"][0]["id"] for c in one] == ["c007@example.com"]
    assert api.get("/contacts", params={"email": "C007@example.com"}).json()["contacts"] == []
    assert api.get("/contacts", params={"segmentID": "abc"}).json()["contacts"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"tag": "a", "status": "subscribed"},
        {"limit": 0},
        {"limit": 251},
        {"limit": "ten"},
        {"status": "gone"},
        {"after": "not a cursor!"},
    ],
)
def test_list_refuses_bad_queries(api: Api, params: dict) -> None:
    r = api.get("/contacts", params=params)
    assert r.status_code == 400
    assert r.json()["errors"]


# -- tags ---------------------------------------------------------------------------------


def test_tags_add_without_duplicates_and_remove(api: Api, srv: OmnisendServer) -> None:
    api.post("/contacts", json=body("t1@example.com", tags=["keep"]))
    created = api.post("/contacts", json=body("t2@example.com")).json()

    added = api.post(
        "/contacts/tags",
        json={"tags": ["vip", "keep"], "emails": ["t1@example.com", "ghost@example.com"]},
    )
    assert added.status_code == 202
    by_id = api.post("/contacts/tags", json={"tags": ["vip"], "contactIDs": [created["id"]]})
    assert by_id.status_code == 202
    assert eventually(lambda: srv.contact("t2@example.com")["tags"] == ["vip"])
    assert srv.contact("t1@example.com")["tags"] == ["keep", "vip"]
    assert srv.contact("ghost@example.com") is None

    removed = api.delete("/contacts/tags", json={"tags": ["keep"], "emails": ["t1@example.com"]})
    assert removed.status_code == 202
    assert eventually(lambda: srv.contact("t1@example.com")["tags"] == ["vip"])
    assert srv.count(path_prefix="/contacts/tags") == 3
    assert all(e.group == "tags" for e in srv.requests if e.path == "/contacts/tags")


@pytest.mark.parametrize(
    "payload",
    [
        {"tags": [], "emails": ["a@example.com"]},
        {"tags": [f"t{i}" for i in range(101)], "emails": ["a@example.com"]},
        {"tags": ["x"], "emails": [f"u{i}@example.com" for i in range(251)]},
        {"tags": ["x"]},
        {"tags": ["x"], "emails": ["a@example.com"], "contactIDs": ["1"]},
        {"tags": ["x"], "emails": ["not-an-email"]},
        {"tags": [""], "emails": ["a@example.com"]},
    ],
)
def test_tags_request_violations_are_400(api: Api, payload: dict) -> None:
    r = api.post("/contacts/tags", json=payload)
    assert r.status_code == 400
    assert r.json()["errors"]


# -- batches -----------------------------------------------------------------------------


def test_batch_goes_pending_to_finished_with_per_item_results() -> None:
    with OmnisendServer(api_keys=(KEY,), batch_delay=0.3) as slow:
        api = Api(slow.url)
        api.post("/contacts", json=body("old@example.com"))
        items = [body("new@example.com"), body("old@example.com"), body("bad@"), {"tags": "x"}]
        r = api.post("/batches", json={"method": "POST", "endpoint": "contacts", "items": items})
        assert r.status_code == 200
        accepted = r.json()
        assert accepted["status"] == "pending" and accepted["totalCount"] == 4
        assert {"batchID", "createdAt", "endpoint", "method"} <= accepted.keys()
        assert api.get(f"/batches/{accepted['batchID']}").json()["status"] == "pending"
        assert slow.contact("new@example.com") is None  # not applied yet

        in_progress = wait_batch(api, accepted["batchID"], until=("inProgress",))
        assert in_progress["status"] == "inProgress"
        done = wait_batch(api, accepted["batchID"])
        assert done["status"] == "finished"
        assert (done["totalCount"], done["finishedCount"], done["errorsCount"]) == (4, 4, 2)

        got = api.get(f"/batches/{accepted['batchID']}/items").json()
        codes = [(i["responseCode"], i["status"]) for i in got["items"]]
        assert codes == [(201, "finished"), (200, "finished"), (400, "failed"), (400, "failed")]
        assert [i["request"] for i in got["items"]] == items
        assert got["items"][0]["response"]["id"] == slow.contact("new@example.com")["id"]
        assert len({i["itemID"] for i in got["items"]}) == 4
        direct = api.post("/contacts", json=body("bad@")).json()
        assert got["items"][2]["response"] == direct  # same problem as POST /contacts
        assert not got["paging"]["hasMore"]


def test_batch_items_are_paged(api: Api) -> None:
    items = [body(f"i{i}@example.com") for i in range(5)]
    batch = api.post("/batches", json={"method": "POST", "endpoint": "contacts", "items": items})
    batch_id = batch.json()["batchID"]
    wait_batch(api, batch_id)
    first = api.get(f"/batches/{batch_id}/items", params={"limit": 3}).json()
    assert len(first["items"]) == 3 and first["paging"]["hasMore"]
    rest = api.get(
        f"/batches/{batch_id}/items",
        params={"limit": 3, "after": first["paging"]["cursors"]["after"]},
    ).json()
    assert [i["request"] for i in first["items"] + rest["items"]] == items
    assert not rest["paging"]["hasMore"]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"method": "POST", "endpoint": "contacts", "items": []}, 400),
        ({"method": "POST", "endpoint": "contacts", "items": [body("a@example.com")] * 101}, 400),
        ({"method": "PUT", "endpoint": "contacts", "items": [body("a@example.com")]}, 400),
        ({"method": "POST", "endpoint": "products", "items": [body("a@example.com")]}, 400),
        ({"method": "POST", "endpoint": "contacts", "items": ["a@example.com"]}, 400),
        (
            {
                "method": "POST",
                "endpoint": "contacts",
                "items": [body(f"u{i}@example.com", firstName="x" * 11_000) for i in range(100)],
            },
            413,
        ),
    ],
)
def test_batch_request_violations(
    api: Api, srv: OmnisendServer, payload: dict, status: int
) -> None:
    r = api.post("/batches", json=payload)
    assert r.status_code == status
    assert r.json()["status"] == status
    assert srv.batches() == []


def test_unknown_batch_is_404_and_batches_belong_to_their_account(
    api: Api, srv: OmnisendServer
) -> None:
    assert api.get("/batches/" + "a" * 24).status_code == 404
    assert api.get("/batches/" + "a" * 24 + "/items").status_code == 404
    batch_id = api.post(
        "/batches",
        json={"method": "POST", "endpoint": "contacts", "items": [body("o@example.com")]},
    ).json()["batchID"]
    other = Api(srv.url, key=OTHER_KEY)
    assert other.get(f"/batches/{batch_id}").status_code == 404
    assert other.get("/batches", params=CONTACTS).json()["batches"] == []
    assert other.get("/contacts", params={"email": "o@example.com"}).json()["contacts"] == []
    wait_batch(api, batch_id)
    assert api.get("/contacts", params={"email": "o@example.com"}).json()["contacts"]


def test_list_batches_newest_first_with_filters_and_paging(api: Api, srv: OmnisendServer) -> None:
    ids = []
    for i in range(3):
        r = api.post(
            "/batches",
            json={"method": "POST", "endpoint": "contacts", "items": [body(f"b{i}@example.com")]},
        )
        ids.append(r.json()["batchID"])
    for batch_id in ids:
        wait_batch(api, batch_id)
    listed = api.get("/batches", params={**CONTACTS, "limit": 2}).json()
    assert [b["batchID"] for b in listed["batches"]] == ids[::-1][:2]
    assert listed["paging"]["limit"] == 2 and listed["paging"]["offset"] == 0
    assert listed["paging"]["previous"] is None
    rest = api.session.get(listed["paging"]["next"], timeout=5).json()
    assert [b["batchID"] for b in rest["batches"]] == ids[:1]
    assert rest["paging"]["next"] is None and rest["paging"]["offset"] == 2
    finished = api.get("/batches", params={**CONTACTS, "status": "finished"}).json()["batches"]
    assert len(finished) == 3 and all(b["finishedCount"] == 1 for b in finished)
    assert api.get("/batches", params={**CONTACTS, "status": "pending"}).json()["batches"] == []
    assert api.get("/batches", params={**CONTACTS, "status": "done"}).status_code == 400
    assert api.get("/batches", params={**CONTACTS, "limit": 251}).status_code == 400


# -- rate limits ---------------------------------------------------------------------------


def test_rate_limit_headers_429_with_retry_after_then_recovery() -> None:
    with OmnisendServer(api_keys=(KEY,), requests_per_minute=5, window_seconds=1.0) as limited:
        api = Api(limited.url)
        remaining = []
        for _ in range(5):
            r = api.get("/contacts")
            assert r.status_code == 200
            assert r.headers["X-Rate-Limit-Limit"] == "5"
            assert r.headers["X-Rate-Limit-Reset"] == "1"
            remaining.append(int(r.headers["X-Rate-Limit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        refused = api.post("/contacts", json=body("late@example.com"))
        assert refused.status_code == 429
        assert refused.json()["retryAfter"] == 1
        assert refused.headers["X-Rate-Limit-Remaining"] == "0"
        assert "Retry-After" not in refused.headers
        assert limited.contact("late@example.com") is None

        tags = api.post("/contacts/tags", json={"tags": ["x"], "emails": ["a@example.com"]})
        assert tags.status_code == 202  # the tags group has its own window

        time.sleep(1.05)
        again = api.get("/contacts")
        assert again.status_code == 200
        assert again.headers["X-Rate-Limit-Remaining"] == "4"
        assert limited.count(status=429) == 1


def test_tags_group_has_its_own_limit_and_unlimited_still_sends_headers(
    api: Api,
) -> None:
    r = api.get("/contacts")
    assert int(r.headers["X-Rate-Limit-Limit"]) >= 1_000_000
    assert int(r.headers["X-Rate-Limit-Reset"]) >= 1
    with OmnisendServer(api_keys=(KEY,), tags_requests_per_minute=1) as limited:
        tapi = Api(limited.url)
        payload = {"tags": ["x"], "emails": ["a@example.com"]}
        assert tapi.post("/contacts/tags", json=payload).status_code == 202
        second = tapi.post("/contacts/tags", json=payload)
        assert second.status_code == 429 and second.json()["retryAfter"] >= 1
        assert tapi.get("/contacts").status_code == 200


# -- faults --------------------------------------------------------------------------------

BATCH = {"method": "POST", "endpoint": "contacts", "items": [body("f@example.com")]}


def test_status_fault_fires_times_then_stops_without_applying(
    api: Api, srv: OmnisendServer
) -> None:
    srv.add_fault(FaultRule(method="POST", path="/batches", kind="status", status=503, times=2))
    assert api.get("/batches", params=CONTACTS).status_code == 200  # other methods pass
    first, second, third = (api.post("/batches", json=BATCH) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.json()["status"] == 503
    assert "X-Rate-Limit-Remaining" in first.headers
    assert len(srv.batches()) == 1
    assert srv.count(method="POST", path_prefix="/batches", status=503) == 2
    assert srv.fault_hits()[0][1] == 2


def test_status_fault_with_verbatim_body_headers_and_after(api: Api, srv: OmnisendServer) -> None:
    srv.add_fault(
        FaultRule(
            path="/contacts",
            status=500,
            body={"oops": True},
            headers={"Retry-After": "2"},
            after=1,
            times=1,
        )
    )
    assert api.get("/contacts").status_code == 200  # skipped by `after`
    r = api.get("/contacts")
    assert r.status_code == 500 and r.json() == {"oops": True}
    assert r.headers["Retry-After"] == "2"
    assert api.get("/contacts").status_code == 200


def test_rate_limit_fault_looks_like_an_exhausted_window(api: Api, srv: OmnisendServer) -> None:
    srv.add_fault(FaultRule(method="POST", path="/batches", kind="rate_limit", times=1))
    r = api.post("/batches", json=BATCH)
    assert r.status_code == 429
    assert r.json()["retryAfter"] >= 1
    assert r.headers["X-Rate-Limit-Remaining"] == "0"
    assert "Retry-After" not in r.headers
    assert srv.batches() == []
    srv.add_fault(FaultRule(kind="rate_limit", headers={"Retry-After": "3"}, times=1))
    assert api.get("/contacts").headers["Retry-After"] == "3"
    assert api.post("/batches", json=BATCH).status_code == 200


def test_delay_fault_outlasts_a_client_timeout(api: Api, srv: OmnisendServer) -> None:
    srv.add_fault(FaultRule(method="GET", kind="delay", seconds=0.6, times=1))
    with pytest.raises(requests.Timeout):
        api.get("/contacts", timeout=0.2)
    assert api.get("/contacts", timeout=2).status_code == 200


def test_reset_fault_before_and_after_applying(api: Api, srv: OmnisendServer) -> None:
    srv.add_fault(FaultRule(method="POST", path="/contacts", kind="reset", times=1))
    with pytest.raises(requests.ConnectionError):
        api.post("/contacts", json=body("lost@example.com"))
    assert srv.contact("lost@example.com") is None

    srv.add_fault(FaultRule(method="POST", path="/contacts", kind="reset", apply=True, times=1))
    with pytest.raises(requests.ConnectionError):
        api.post("/contacts", json=body("applied@example.com"))
    assert srv.contact("applied@example.com") is not None  # succeeded, response lost
    assert srv.count(method="POST", status=0) == 2
    assert api.post("/contacts", json=body("applied@example.com")).status_code == 200


def test_malformed_fault_returns_a_non_json_body(api: Api, srv: OmnisendServer) -> None:
    srv.add_fault(FaultRule(method="POST", path="/batches", kind="malformed", times=1))
    r = api.post("/batches", json=BATCH)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert srv.batches() == []
    assert api.post("/batches", json=BATCH).json()["batchID"]


def test_batch_stopped_fault_processes_only_the_first_half(api: Api, srv: OmnisendServer) -> None:
    srv.add_fault(FaultRule(kind="batch_stopped", times=1))
    items = [body(f"s{i}@example.com") for i in range(4)]
    batch = api.post("/batches", json={"method": "POST", "endpoint": "contacts", "items": items})
    done = wait_batch(api, batch.json()["batchID"])
    assert done["status"] == "stopped"
    assert (done["totalCount"], done["finishedCount"]) == (4, 2)
    assert done["errors"]
    statuses = [i["status"] for i in api.get(f"/batches/{done['batchID']}/items").json()["items"]]
    assert statuses == ["finished", "finished", "stopped", "stopped"]
    assert srv.contact("s1@example.com") and srv.contact("s2@example.com") is None
    again = api.post("/batches", json={"method": "POST", "endpoint": "contacts", "items": items})
    assert wait_batch(api, again.json()["batchID"])["status"] == "finished"


def test_batch_stuck_fault_never_finishes(api: Api, srv: OmnisendServer) -> None:
    srv.add_fault(FaultRule(kind="batch_stuck", times=1))
    batch_id = api.post("/batches", json=BATCH).json()["batchID"]
    other = {**BATCH, "items": [body("g@example.com")]}
    normal = api.post("/batches", json=other).json()["batchID"]
    # Batches are processed in the order they came: once the later one has finished,
    # the stuck one has had its turn.
    assert wait_batch(api, normal)["status"] == "finished"
    stuck = api.get(f"/batches/{batch_id}").json()
    assert stuck["status"] == "inProgress" and stuck["finishedCount"] == 0
    assert srv.contact("f@example.com") is None
    assert srv.contact("g@example.com") is not None


def test_item_error_fault_fails_matching_items_only(api: Api, srv: OmnisendServer) -> None:
    srv.add_fault(FaultRule(kind="item_error", email_pattern=r"^refuse", status=500, times=2))
    emails = ["ok@example.com", "refuse1@example.com", "refuse2@example.com", "refuse3@example.com"]
    batch = api.post(
        "/batches",
        json={"method": "POST", "endpoint": "contacts", "items": [body(e) for e in emails]},
    )
    done = wait_batch(api, batch.json()["batchID"])
    assert done["errorsCount"] == 2 and done["finishedCount"] == 4
    items = api.get(f"/batches/{done['batchID']}/items").json()["items"]
    assert [i["responseCode"] for i in items] == [201, 500, 500, 201]
    assert items[1]["response"]["status"] == 500 and items[1]["response"]["detail"]
    assert srv.contact("refuse1@example.com") is None
    assert srv.contact("refuse3@example.com") is not None


def test_probability_uses_the_seeded_rng_and_clear_faults_disarms(srv: OmnisendServer) -> None:
    def pattern(seed: int) -> list[int]:
        with OmnisendServer(api_keys=(KEY,), seed=seed) as server:
            server.add_fault(FaultRule(kind="status", status=502, probability=0.5))
            api = Api(server.url)
            return [api.get("/contacts").status_code for _ in range(16)]

    first = pattern(7)
    assert first == pattern(7)
    assert {200, 502} == set(first)

    srv.add_fault(FaultRule(kind="status", status=500))
    api = Api(srv.url)
    assert api.get("/contacts").status_code == 500
    srv.clear_faults()
    assert api.get("/contacts").status_code == 200


def test_fault_rule_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        FaultRule(kind="explode")


# -- v5 ----------------------------------------------------------------------------------


def test_v5_auth_ids_status_dates_and_errors(srv: OmnisendServer) -> None:
    v5 = Api(srv.url, generation="v5")
    wrong = requests.get(
        f"{srv.url}/v5/contacts", headers={"Authorization": f"Omnisend-API-Key {KEY}"}, timeout=5
    )
    assert wrong.status_code == 401 and "error" in wrong.json()

    payload = {
        "identifiers": [
            {
                "type": "email",
                "id": "v5@example.com",
                "channels": {
                    "email": {"status": "subscribed", "statusDate": "2025-01-02T03:04:05Z"}
                },
            }
        ],
        "firstName": "Vee",
    }
    r = v5.post("/contacts", json=payload)
    assert r.status_code in (200, 201)
    contact = r.json()
    assert "contactID" in contact and "id" not in contact
    assert email_channel(contact) == {"status": "subscribed", "statusDate": "2025-01-02T03:04:05Z"}
    stored = srv.contact("v5@example.com")
    assert stored["id"] == contact["contactID"]
    assert email_channel(stored)["statusChangedAt"] == "2025-01-02T03:04:05Z"
    assert v5.get(f"/contacts/{contact['contactID']}").json()["firstName"] == "Vee"
    assert v5.patch(f"/contacts/{contact['contactID']}", json={"city": "Oslo"}).status_code == 200
    assert srv.contact("v5@example.com")["city"] == "Oslo"

    bad = v5.post("/contacts", json=body("v5@example.com", "subscribed", "2025-01-01T00:00:00Z"))
    assert bad.status_code == 400  # statusChangedAt is not a v5 field
    error = bad.json()
    assert set(error) == {"error", "fields"}
    assert "identifiers[0].channels.email.statusChangedAt" in error["fields"]
    assert isinstance(next(iter(error["fields"].values())), list)
    assert (
        v5.post("/contacts/tags", json={"tags": ["x"], "emails": ["v5@example.com"]}).status_code
        == 404
    )
    assert v5.get("/contacts/" + "0" * 24).json()["error"]


def test_v5_offset_paging_follows_next_urls_and_batches(srv: OmnisendServer) -> None:
    v5 = Api(srv.url, generation="v5")
    items = [body(f"p{i}@example.com") for i in range(5)]
    batch = v5.post("/batches", json={"method": "POST", "endpoint": "contacts", "items": items})
    assert batch.status_code == 200
    done = wait_batch(v5, batch.json()["batchID"])
    assert done["status"] == "finished" and done["errorsCount"] == 0
    got = v5.get(f"/batches/{done['batchID']}/items").json()["items"]
    assert all("contactID" in i["response"] for i in got)

    seen = []
    page = v5.get("/contacts", params={"limit": 2}).json()
    assert page["paging"]["previous"] is None and page["paging"]["offset"] == 0
    while True:
        seen += [c["identifiers"][0]["id"] for c in page["contacts"]]
        if not page["paging"]["next"]:
            break
        page = v5.session.get(page["paging"]["next"], timeout=5).json()
    assert seen == [f"p{i}@example.com" for i in range(5)]
    listed = v5.get("/batches", params=CONTACTS).json()
    assert [b["batchID"] for b in listed["batches"]] == [done["batchID"]]
    assert listed["paging"]["next"] is None
    assert v5.get("/contacts", params={"tag": "a", "status": "subscribed"}).status_code == 400


# -- harness API --------------------------------------------------------------------------


def test_request_log_count_and_reset(api: Api, srv: OmnisendServer) -> None:
    api.post("/contacts", json=body("r@example.com"))
    api.get("/contacts", params={"email": "r@example.com"})
    entry = srv.requests[-1]
    assert (entry.method, entry.path, entry.status) == ("GET", "/contacts", 200)
    assert entry.query == {"email": "r@example.com"}
    assert (entry.group, entry.api_version) == ("default", VERSION)
    assert srv.count(method="POST", path_prefix="/contacts", status=201) == 1
    assert srv.count(path_prefix="/batches") == 0
    srv.add_fault(FaultRule(kind="status", status=500))
    srv.reset()
    assert srv.contacts() == [] and srv.request_log() == []
    assert api.get("/contacts").status_code == 200  # faults gone too


def test_module_cli_prints_the_url_and_stops_on_sigterm() -> None:
    with cli_server("--api-key", "demo-key") as url:
        r = requests.get(
            f"{url}/api/contacts",
            headers={"Authorization": "Omnisend-API-Key demo-key", "Omnisend-Version": VERSION},
            timeout=5,
        )
        assert r.status_code == 200 and r.json()["contacts"] == []


def test_settle_waits_until_the_client_is_answered_and_accepted_writes_are_applied() -> None:
    """`settle()`, the tests' event for "Omnisend has caught up": False while a client
    still holds a connection; once it is gone, True only after every tag call and batch
    accepted (202) has been applied."""
    with OmnisendServer(api_keys=(KEY,), batch_delay=0.3) as srv:
        api = Api(srv.url)
        statuses = [
            api.post("/contacts", json=body("t@example.com")).status_code,
            api.post(
                "/contacts/tags", json={"tags": ["vip"], "emails": ["t@example.com"]}
            ).status_code,
            api.post("/batches", json={**BATCH, "items": [body("b@example.com")]}).status_code,
        ]  # (status codes only: a response kept alive keeps its connection open)
        assert statuses == [201, 202, 200]
        assert not srv.settle(timeout=0.1)  # the session's connection is still open
        api.session.close()
        assert srv.settle(timeout=10)
        assert srv.contact("t@example.com")["tags"] == ["vip"]
        assert srv.contact("b@example.com") is not None
