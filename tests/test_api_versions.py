"""The core integration path under both Omnisend API generations, 2026-03-15 and v5.

The same CLI run (`target-omnisend --config config.json < segment`) against the local
server, which speaks both: 2026-03-15 under /api (Authorization: Omnisend-API-Key,
`statusChangedAt`, cursor paging, RFC 9457 problems) and v5 under /v5 (X-API-KEY,
`statusDate`, `paging.next` URLs, `{error, fields}` errors).

v5 has no tags endpoint, and tags in a contact body would replace the contact's other
tags: on v5 the default segment tag is skipped with one warning (the contacts are still
delivered), while settings that exist only for tagging (`tags`, `sync_mode: mirror`)
are refused before any request.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from target_omnisend.api import GENERATIONS
from target_omnisend.client import OmnisendClient
from target_omnisend.ratelimit import RateLimits
from tests.conftest import API_KEY
from tests.harness import (
    DEFAULT_STATUS_DATE,
    read_jsonl,
    run_target,
    sample_records,
    segment_messages,
    stored_email,
)
from tests.omnisend_server import FaultRule, OmnisendServer
from tests.test_cli import expected_emails

VERSIONS = ("2026-03-15", "v5")
ROOT = {"2026-03-15": "/api", "v5": "/v5"}
STAMP = {"2026-03-15": "statusChangedAt", "v5": "statusDate"}

#: Omnisend refuses it (fault rule below) although the target finds it valid.
REFUSED = "refuse.me@example.com"
#: Valid to the target (IDN domain, punycoded), refused by Omnisend's own email check:
#: a per-item refusal that names the field, in each generation's error format.
IDN = "Anna@Пример.рф"


def auth(version: str) -> dict[str, str]:
    if version == "v5":
        return {"X-API-KEY": API_KEY}
    return {"Authorization": f"Omnisend-API-Key {API_KEY}", "Omnisend-Version": version}


def create_subscriber(server: OmnisendServer, version: str, email: str) -> None:
    """An existing contact, written through the same generation (its own shapes)."""
    response = requests.post(
        f"{server.url}{ROOT[version]}/contacts",
        headers=auth(version),
        json={
            "identifiers": [
                {
                    "type": "email",
                    "id": email,
                    "channels": {
                        "email": {"status": "subscribed", STAMP[version]: "2025-06-01T00:00:00Z"}
                    },
                }
            ]
        },
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text


def email_channel(contact: dict[str, Any]) -> dict[str, Any]:
    """The stored email channel (the inspection API renders the 2026-03-15 shape)."""
    identifier = next(i for i in contact["identifiers"] if i["type"] == "email")
    return identifier["channels"]["email"]


@pytest.fixture(params=VERSIONS)
def api_version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def versioned_config(config: dict[str, Any], api_version: str, tmp_path: Path) -> dict[str, Any]:
    return {
        **config,
        "api_version": api_version,
        "fingerprint_store_path": str(tmp_path / "fingerprints.sqlite"),
        "status_field": "status",
        "status_timestamp_field": "status_at",
    }


def test_segment_is_delivered_with_item_refusals_under_each_generation(
    server: OmnisendServer, versioned_config: dict[str, Any], api_version: str, tmp_path: Path
) -> None:
    server.add_fault(FaultRule(kind="item_error", email_pattern=r"^refuse", status=400))
    create_subscriber(server, api_version, "fan@example.com")
    create_subscriber(server, api_version, "leaver@example.com")
    records = [
        *sample_records(),
        {"customer_id": "X1", "email": REFUSED},
        {"customer_id": "X2", "email": IDN},
        {"customer_id": "X3", "email": "Fan@Example.com", "first_name": "Fan"},
        {
            "customer_id": "X4",
            "email": "leaver@example.com",
            "status": "unsubscribed",
            "status_at": "2026-01-02T03:04:05Z",
        },
    ]
    run = run_target(
        versioned_config, segment_messages(records, key="customer_id"), workdir=tmp_path
    )

    assert run.returncode == 0, run.stderr[-3000:]
    # Every request went to this generation's root with its auth (else: 401/404).
    log = server.request_log()
    assert {entry.api_version for entry in log} == {api_version}
    assert all(entry.status < 400 for entry in log), [e for e in log if e.status >= 400]

    stored = {stored_email(c) for c in server.contacts()}
    deliverable = expected_emails(records) - {REFUSED}
    assert stored == deliverable
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    by_email = {r["record"].get("email"): r for r in rejected}
    assert by_email[REFUSED]["code"] == "refused_by_omnisend"
    assert by_email[REFUSED]["reason"] == "Omnisend refused this contact (injected item_error)"
    assert by_email[IDN]["code"] == "refused_by_omnisend"
    # The server's field-level reason survives either error format.
    assert "identifiers[0].id: Must be a valid email address" in by_email[IDN]["reason"]
    assert len(records) == len(stored) + len(rejected) + 1  # the sample's one case-duplicate

    # Status dates travel in the generation's own field name:
    fan = server.contact("fan@example.com")
    assert fan["firstName"] == "Fan"
    assert email_channel(fan)["status"] == "subscribed"  # the old default date loses
    leaver = email_channel(server.contact("leaver@example.com"))
    assert (leaver["status"], leaver["statusChangedAt"]) == ("unsubscribed", "2026-01-02T03:04:05Z")
    new = email_channel(server.contact("rossi0@shop.example.net"))
    assert (new["status"], new["statusChangedAt"]) == ("nonSubscribed", DEFAULT_STATUS_DATE)

    tagged = {stored_email(c) for c in server.contacts() if "segment:vip_buyers" in c["tags"]}
    warnings = [line for line in run.stderr.splitlines() if "segment_tag" in line]
    if api_version == "v5":
        assert tagged == set()
        assert server.count(path_prefix="/contacts/tags") == 0
        assert len(warnings) == 1 and "v5" in warnings[0], warnings
    else:
        assert tagged == deliverable
        assert warnings == []


def test_client_pages_through_contacts_in_each_generation(
    server: OmnisendServer, api_version: str
) -> None:
    """More contacts than one page (250): cursors on 2026-03-15, `paging.next` on v5."""
    for i in range(260):
        email = f"page{i:03d}@example.com"
        response = requests.post(
            f"{server.url}{ROOT[api_version]}/contacts",
            headers=auth(api_version),
            json={"identifiers": [{"type": "email", "id": email}]},
            timeout=10,
        )
        assert response.status_code in (200, 201), response.text
    client = OmnisendClient(
        base_url=server.url,
        api_key=API_KEY,
        generation=GENERATIONS[api_version],
        limits=RateLimits(10_000, 10_000),
        logger=logging.getLogger("test"),
    )
    try:
        listed = [c for c in client.list_contacts()]
    finally:
        client.close()
    assert len(listed) == 260
    id_field = "contactID" if api_version == "v5" else "id"
    assert all(id_field in c for c in listed)
    emails = [stored_email(c) for c in listed]
    assert emails == [f"page{i:03d}@example.com" for i in range(260)]
    contacts_reads = [e for e in server.request_log() if e.method == "GET"]
    assert len(contacts_reads) == 2  # two pages, followed as each generation says


def test_wrong_api_key_fails_in_one_line_under_each_generation(
    server: OmnisendServer, versioned_config: dict[str, Any], api_version: str, tmp_path: Path
) -> None:
    versioned_config["api_key"] = "wrong-key-123"
    run = run_target(versioned_config, segment_messages(sample_records()), workdir=tmp_path)

    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "API key" in line]
    assert len(errors) == 1, run.stderr[-2000:]
    assert "wrong-key-123" not in run.output
    assert "Traceback" not in run.stderr
    assert [(e.api_version, e.status) for e in server.request_log()] == [(api_version, 401)]
    assert server.contacts() == []


@pytest.mark.parametrize(
    ("change", "setting"),
    [({"tags": ["vip"]}, "tags"), ({"sync_mode": "mirror"}, "mirror")],
)
def test_v5_refuses_tag_only_settings_before_any_request(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path, change: dict, setting: str
) -> None:
    config.update({"api_version": "v5", **change})
    run = run_target(config, segment_messages(sample_records()[:3]), workdir=tmp_path)

    assert run.returncode == 2, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if "Invalid configuration" in line]
    assert len(lines) == 1 and setting in lines[0] and "v5" in lines[0], lines
    assert server.request_log() == []
