"""Fixtures: a real local Omnisend-compatible server per test, and a config pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.omnisend_server import OmnisendServer

API_KEY = "test-key-5f1c9a7e"


@pytest.fixture
def server() -> Iterator[OmnisendServer]:
    with OmnisendServer(api_keys=(API_KEY,)) as srv:
        yield srv


@pytest.fixture
def config(server: OmnisendServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "api_key": API_KEY,
        "api_url": server.url,
        "rejected_records_path": str(tmp_path / "rejected.jsonl"),
        "batch_poll_interval": 0.05,
        "custom_properties": {"loyalty_tier": "loyalty_tier", "lifetime_value": "lifetime_value"},
    }


#: Omnisend does not document whether `customProperties` in an update merges with a
#: contact's other custom properties or replaces them: property tests run both.
CUSTOM_PROPERTIES_MODES = ("merge", "replace")


@pytest.fixture(params=CUSTOM_PROPERTIES_MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def mode_server(mode: str) -> Any:
    with OmnisendServer(api_keys=(API_KEY,), custom_properties_update=mode) as srv:
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
