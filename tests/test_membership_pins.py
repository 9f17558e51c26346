"""Issue 19: promises the suite did not pin. Each test here fails under one deliberate
bug that used to pass the whole suite: known members re-tagged on every re-send, a
segment renamed in Omnisend used under its new name, a changed `segment_tag` reported
"skipped" after an unchanged re-run, a 403 on segment statistics ending the run.
Replayed through the real CLI against the local Omnisend-compatible server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import run_target
from tests.omnisend_server import FaultRule, OmnisendServer
from tests.test_omnisend_server import Api, eventually

DATA = Path(__file__).parent / "data_files"
TAG = "segment:vip"


def scenario(name: str) -> bytes:
    return (DATA / name).read_bytes()


def summary(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(config["summary_path"]).read_text())


def ok(run: Any) -> Any:
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture
def seg_config(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    config.update(
        fingerprint_store_path=str(tmp_path / "store" / "fingerprints.sqlite"),
        summary_path=str(tmp_path / "summary.json"),
        custom_properties={"tier": "loyalty_tier"},
        segment_tag=TAG,
        segment_name="VIP",
    )
    return config


def test_a_rerun_with_changed_members_makes_no_tag_call(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    """Known members keep their tag: three changed members are re-sent, never re-tagged
    (60 tag calls a minute are the scarcest budget a run has)."""
    ok(run_target(seg_config, scenario("pipeline/full_read_20.singer"), workdir=tmp_path))
    before = server.count("POST", "/contacts/tags")
    changed = scenario("membership/full_read_20_three_changed.singer")
    ok(run_target(seg_config, changed, workdir=tmp_path))
    assert server.count("POST", "/contacts/tags") == before
    run = summary(seg_config)
    assert (run["tag_calls"], run["streams"]["vip"]["delivered"]) == (0, 3)
    assert server.contact("member5@example.com")["customProperties"]["tier"] == "silver"


def test_a_segment_renamed_in_omnisend_is_left_to_its_new_name_and_ours_made_again(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    """A marketer renames our segment "VIP" to "VIP 2025" for a campaign: it is theirs
    now. The next run makes a new "VIP" and leaves "VIP 2025" as it is."""
    full = scenario("pipeline/full_read_20.singer")
    ok(run_target(seg_config, full, workdir=tmp_path))
    assert eventually(lambda: server.segments()[0]["status"] == "ready")  # built
    [ours] = server.segments()
    body = {"name": "VIP 2025", "conditionGroups": ours["conditionGroups"]}
    reply = Api(server.url, key=API_KEY).put(f"/segments/{ours['segmentID']}", json=body)
    assert reply.status_code == 200, reply.text

    ok(run_target(seg_config, full, workdir=tmp_path))
    [result] = summary(seg_config)["segments"]
    assert result["action"] == "created" and result["segment_id"] != ours["segmentID"]
    assert sorted(s["name"] for s in server.segments()) == ["VIP", "VIP 2025"]


def test_a_changed_segment_tag_after_an_unchanged_rerun_updates_our_segment(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    full = scenario("pipeline/full_read_20.singer")
    ok(run_target(seg_config, full, workdir=tmp_path))
    ok(run_target(seg_config, full, workdir=tmp_path))
    assert summary(seg_config)["segments"][0]["action"] == "unchanged"
    ok(run_target({**seg_config, "segment_tag": "segment:vips"}, full, workdir=tmp_path))
    [result] = summary(seg_config)["segments"]
    assert result["action"] == "updated", result
    [segment] = server.segments()
    assert json.dumps(segment["conditionGroups"]).count("segment:vips") == 1


def test_a_403_on_segment_statistics_is_no_reason_to_fail_the_run(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    server.add_fault(
        FaultRule(method="GET", path="/segments", path_pattern=r"/statistics$", status=403)
    )
    run = ok(run_target(seg_config, scenario("pipeline/full_read_20.singer"), workdir=tmp_path))
    [result] = summary(seg_config)["segments"]
    assert result["action"] == "created" and result["contacts_count"] is None
    assert len(run.states) <= 1 and "Traceback" not in run.stderr
