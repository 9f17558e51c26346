"""Attacks on membership (issues 19 and 23), each one a break that was found: a data
engineer's nightly run against the local Omnisend-compatible server, through the real
CLI, asserting on what Omnisend ends with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.omnisend_server import OmnisendServer
from tests.test_membership_property import (
    FULL_20,
    PROPERTY,
    requests_seen,
    run_ok,
    segment_members,
    summary,
)
from tests.test_omnisend_server import Api

DATA = Path(__file__).parent / "data_files"


@pytest.fixture(params=("merge", "replace"))
def mode_server(request: pytest.FixtureRequest) -> Any:
    with OmnisendServer(api_keys=(API_KEY,), custom_properties_update=request.param) as srv:
        yield srv


@pytest.fixture
def prop_config(mode_server: OmnisendServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "api_key": API_KEY,
        "api_url": mode_server.url,
        "rejected_records_path": str(tmp_path / "rejected.jsonl"),
        "batch_poll_interval": 0.05,
        "custom_properties": {"loyalty_tier": "loyalty_tier"},
        "membership_property": "in_{stream_name}",
        "fingerprint_store_path": str(tmp_path / "store" / "fingerprints.sqlite"),
        "summary_path": str(tmp_path / "summary.json"),
    }


def test_drift_repair_on_the_property_route_gives_back_the_exports_own_properties(
    mode_server: OmnisendServer, prop_config: dict[str, Any], tmp_path: Path
) -> None:
    """Another tool writes its own custom property to a member; under Omnisend's
    undocumented *replace* semantics that wipes both our membership property and our
    `loyalty_tier`. Mirror's repair puts the property back; the member's other exported
    fields must come back too (by the next run at the latest), not stay lost behind an
    'unchanged' fingerprint."""
    prop_config |= {"sync_mode": "mirror", "mirror_confirm_runs": 2}
    run_ok(prop_config, FULL_20, tmp_path)
    [segment] = mode_server.segments()
    touched = "member3@example.com"
    tier = mode_server.contact(touched)["customProperties"]["loyalty_tier"]
    other_tool = Api(mode_server.url, key=API_KEY).post(
        "/contacts",
        json={
            "identifiers": [{"type": "email", "id": touched}],
            "customProperties": {"crm_score": 7, PROPERTY: False},
        },
    )
    assert other_tool.status_code in (200, 201), other_tool.text
    assert touched not in segment_members(mode_server, segment["segmentID"])

    run_ok(prop_config, FULL_20, tmp_path)  # the repair run
    assert summary(prop_config)["mirror"][f"custom:{PROPERTY}"]["retagged"] == 1
    run_ok(prop_config, FULL_20, tmp_path)  # and the night after

    props = mode_server.contact(touched)["customProperties"]
    assert props[PROPERTY] is True
    assert props["loyalty_tier"] == tier
    assert touched in segment_members(mode_server, segment["segmentID"])
