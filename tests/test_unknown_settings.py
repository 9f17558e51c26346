"""A misspelt setting gets one warning line naming the closest known setting; the SDK's
own settings and other plugins' TARGET_OMNISEND_* variables get none."""

from __future__ import annotations

from pathlib import Path

from target_omnisend.unknown_settings import unknown_env_settings, unknown_settings
from tests.harness import run_target, sample_records, segment_messages, stored_email
from tests.omnisend_server import OmnisendServer
from tests.test_cli import expected_emails

KNOWN = {"segment_tag", "fingerprint_store_path", "api_key", "batch_size", "batch_size_rows"}


def test_a_misspelt_key_names_the_closest_setting() -> None:
    assert unknown_settings({"fingerprint_store": "x.sqlite", "api_key": "k"}, KNOWN) == [
        "Unknown setting 'fingerprint_store' is ignored; did you mean 'fingerprint_store_path'?"
    ]


def test_a_key_like_no_setting_points_to_about() -> None:
    [line] = unknown_settings({"colour": "red"}, KNOWN)
    assert "'colour'" in line and "--about" in line and "did you mean" not in line


def test_known_keys_give_no_warning_and_values_are_never_shown() -> None:
    assert unknown_settings({"api_key": "k", "batch_size_rows": 5}, KNOWN) == []
    [line] = unknown_settings({"segmnt_tag": "secret-value-123"}, KNOWN)
    assert "secret-value-123" not in line and "'segment_tag'" in line


def test_environment_misspellings_are_named_other_plugins_variables_are_not() -> None:
    environ = {
        "TARGET_OMNISEND_SEGMNT_TAG": "vip",  # ours, misspelt
        "TARGET_OMNISEND_SEGMENT_TAG": "vip",  # ours
        "TARGET_OMNISEND_STAGING_API_KEY": "k",  # an inheriting plugin, target-omnisend-staging
        # target-omnisend-eu's: as alike to segment_tag as a misspelling would be (0.88),
        # silent only because it ends in one of our settings.
        "TARGET_OMNISEND_EU_SEGMENT_TAG": "eu",
        "TARGET_OMNISEND_BATCH": "1",  # like batch_size, but not enough (0.67) to be it
        "TARGET_OMNISEND_PIP_URL": "-e .",  # someone else's, not like any setting
        "TARGET_POSTGRES_SEGMNT_TAG": "x",  # another prefix
    }
    assert unknown_env_settings(environ, KNOWN) == [
        "Unknown environment variable TARGET_OMNISEND_SEGMNT_TAG is ignored; did you mean "
        "TARGET_OMNISEND_SEGMENT_TAG?"
    ]


def test_the_cli_warns_once_per_misspelt_setting_and_still_delivers(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    config |= {
        "fingerprint_store": str(tmp_path / "fp.sqlite"),  # meant fingerprint_store_path
        "segmnt_tag": "vip",  # meant segment_tag
        # the SDK's own settings are known, not misspellings:
        "batch_size_rows": 50,
        "validate_records": True,
        "add_record_metadata": False,
        "stream_maps": {},
        "flattening_enabled": False,
    }
    records = sample_records()[:5]
    run = run_target(
        config,
        segment_messages(records),
        workdir=tmp_path,
        env={
            "TARGET_OMNISEND_FULL_REFRESHH": "true",
            "TARGET_OMNISEND_EU_SEGMENT_TAG": "eu",  # target-omnisend-eu's: no warning
            "TARGET_OMNISEND_BATCH": "1",  # not close enough to batch_size: no warning
        },
    )

    assert run.returncode == 0, run.stderr[-2000:]
    warnings = [line for line in run.stderr.splitlines() if "Unknown " in line]
    assert len(warnings) == 3, warnings
    assert "'fingerprint_store'" in warnings[0] and "'fingerprint_store_path'" in warnings[0]
    assert "'segmnt_tag'" in warnings[1] and "'segment_tag'" in warnings[1]
    assert "TARGET_OMNISEND_FULL_REFRESH?" in warnings[2]
    assert {stored_email(c) for c in server.contacts()} == expected_emails(records)
