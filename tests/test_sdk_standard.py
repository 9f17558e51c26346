"""The Meltano SDK's standard target tests, run against a real local Omnisend server.

The SDK feeds generic streams (camelCase keys, arrays, unicode strings, schema updates,
records without a key...) that mostly carry no email. For a contacts destination the
right outcome for such a record is a rejection with a reason, not a crash. So on top of
the SDK's own checks (no exception, or exactly the exception it expects) every standard
sync here is audited: each RECORD read is either a contact on the server (its email
lower-cased) or a line in the rejected-records file, and the tap's last STATE is relayed.

The SDK builds the test class at import time from a config dict, but the server is
started per test: the SDK's test class takes its `runner` and `resource` from pytest
fixtures, which this module overrides to point the target at the test's server and
temp directory (nothing lands in the repository).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from singer_sdk import Target
from singer_sdk.testing import TargetTestRunner, get_target_test_class
from singer_sdk.testing.suites import SingerTestSuite
from singer_sdk.testing.target_tests import (
    TargetMultipleStateMessages,
    TargetRecordMissingRequiredProperty,
)

from target_omnisend.errors import EmailFieldMissing
from target_omnisend.mapping import Rejection, normalize_email
from target_omnisend.target import TargetOmnisend
from tests.harness import read_jsonl, stored_email
from tests.omnisend_server import OmnisendServer

API_KEY = "sdk-test-key"

#: What every standard run shares; the server URL and temp paths are added per test.
BASE_CONFIG: dict[str, Any] = {
    "api_key": API_KEY,
    "batch_poll_interval": 0.05,
    "request_timeout": 5,
    "max_retries": 1,
}

#: Standard tests that never finish a sync: they only print, or expect the SDK to raise.
NOT_AUDITED = {
    "test_target_cli_prints",
    "test_target_invalid_schema",
    "test_target_record_before_schema",
    "test_target_record_missing_key_property",
}


class AuditedRunner(TargetTestRunner):
    """The SDK's runner, plus an audit of what reached the server after each sync."""

    def __init__(self, *, server: OmnisendServer, workdir: Path) -> None:
        self.server = server
        self.rejected_path = workdir / "rejected.jsonl"
        config = {
            **BASE_CONFIG,
            "api_url": server.url,
            "rejected_records_path": str(self.rejected_path),
            "fingerprint_store_path": str(workdir / "fingerprints.sqlite"),
            "dry_run_path": str(workdir / "dry_run.jsonl"),
        }
        super().__init__(TargetOmnisend, config=config, parse_env_config=False)
        self.audited = 0
        self.targets: list[Target] = []

    def new_target(self) -> Target:
        target = super().new_target()
        self.targets.append(target)
        return target

    def close_targets(self) -> None:
        """The SDK's templates build a target per test that never sees end of input;
        give its background threads and HTTP session back."""
        for target in self.targets:
            for part in ("engine", "client"):
                closer = getattr(getattr(target, part, None), "close", None)
                if closer is not None:
                    closer()

    def sync_all(self, **kwargs: Any) -> None:
        try:
            super().sync_all(**kwargs)
        except EmailFieldMissing as exc:
            # A generic stream with no email field at all: a contacts target stops at its
            # SCHEMA (exit 2 from the CLI) instead of rejecting every record one by one.
            assert self.input_filepath is not None
            self._audit_stopped_at_schema(self.input_filepath.read_text(encoding="utf-8"), exc)
            return
        if self.input_filepath is not None:
            self._audit(self.input_filepath.read_text(encoding="utf-8"))

    def _audit_stopped_at_schema(self, singer_text: str, exc: EmailFieldMissing) -> None:
        messages = [json.loads(line) for line in singer_text.splitlines() if line.strip()]
        before: list[dict[str, Any]] = []
        for message in messages:
            if message.get("type") == "SCHEMA":
                properties = message["schema"].get("properties") or {}
                if properties and "email" not in properties:
                    assert f"stream '{message['stream']}' has no field 'email'" in str(exc)
                    break
            elif message.get("type") == "RECORD":
                before.append(message["record"])
        else:
            raise AssertionError(f"stopped at a SCHEMA that has an email field: {exc}")
        emails = {normalize_email(record.get("email")) for record in before}
        stored = {stored_email(contact) for contact in self.server.contacts()}
        assert stored <= emails, "a record after the SCHEMA without email reached the server"
        assert not self.state_messages, "STATE was emitted by a run that stopped"
        self.audited += 1

    def _audit(self, singer_text: str) -> None:
        messages = [json.loads(line) for line in singer_text.splitlines() if line.strip()]
        deliverable: set[str] = set()
        undeliverable = 0
        for message in messages:
            if message.get("type") != "RECORD":
                continue
            email = normalize_email(message["record"].get("email"))
            if isinstance(email, Rejection):
                undeliverable += 1
            else:
                deliverable.add(email)
        stored = {stored_email(contact) for contact in self.server.contacts()}
        assert stored == deliverable, "the server's contacts are not the records' emails"
        rejected = read_jsonl(self.rejected_path)
        assert len(rejected) == undeliverable, "not every record without an email was rejected"
        for line in rejected:
            assert line["code"] in {"missing_email", "invalid_email", "schema_invalid"}, line
            assert line["reason"] and line["stream"] and "record" in line
        states = [m["value"] for m in messages if m.get("type") == "STATE"]
        if states and states[-1]:  # the SDK does not repeat an empty state
            assert self.state_messages, "the tap's STATE was not relayed"
            assert self.state_messages[-1] == states[-1]
        self.audited += 1


StandardTargetTests = get_target_test_class(
    TargetOmnisend,
    config=BASE_CONFIG,
    # Two tests the SDK defines but leaves out of its default suite: a record missing
    # a required property applies here (it must be rejected, not fatal); the other is
    # skipped below with the reason.
    custom_suites=[
        SingerTestSuite(
            kind="target",
            tests=[TargetRecordMissingRequiredProperty, TargetMultipleStateMessages],
        )
    ],
)


class TestTargetOmnisendStandard(StandardTargetTests):  # type: ignore[misc,valid-type]
    """SDK standard target tests (singer_sdk.testing.suites.target_tests), audited."""

    @pytest.fixture
    def resource(self) -> Iterator[OmnisendServer]:
        with OmnisendServer(api_keys=(API_KEY,)) as server:
            yield server

    @pytest.fixture
    def runner(
        self, resource: OmnisendServer, tmp_path: Path, request: pytest.FixtureRequest
    ) -> Iterator[AuditedRunner]:
        runner = AuditedRunner(server=resource, workdir=tmp_path)
        yield runner
        runner.close_targets()
        if request.node.name not in NOT_AUDITED:
            assert runner.audited == 1, f"{request.node.name} finished without the audit"

    @pytest.mark.skip(
        reason="Its stream has no email field, so a contacts target stops at the SCHEMA "
        "(EmailFieldMissing, exit 2) before the record's missing key is seen. The same check "
        "on a stream that has an email field: tests/test_clear_for_users.py::"
        "test_a_record_missing_a_key_property_other_than_the_email_still_stops_the_run"
    )
    def test_target_record_missing_key_property(self) -> None: ...

    @pytest.mark.skip(
        reason="Expects a STATE checkpoint after every input STATE. A contacts target "
        "emits STATE only once the records before it are confirmed by Omnisend, i.e. when "
        "the SDK drains its sinks (full batch, schema change, every state_interval, end of input); "
        "checkpointing per input STATE would cost a batch round-trip each. The SDK leaves "
        "this test out of its own target suite too."
    )
    def test_target_multiple_state_messages(self) -> None: ...
