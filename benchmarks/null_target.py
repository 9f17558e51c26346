"""The floor: an SDK target that reads, validates (with the same validator as
target-omnisend) and discards. target-omnisend cannot be faster than this.

With NULL_TARGET_READER=target-omnisend it also reads input the way target-omnisend
does (msgspec first), which is the floor for target-omnisend's own work alone. With
NULL_TARGET_VALIDATOR=default it validates with the SDK's default (jsonschema)
validator instead: the floor of a plain SDK target."""

from __future__ import annotations

import os
from typing import Any

from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target

from target_omnisend.reader import SingerInput
from target_omnisend.validation import CapturingValidator


class NullSink(BatchSink):
    MAX_SIZE_DEFAULT = 1000

    def get_validator(self) -> Any:
        if os.environ.get("NULL_TARGET_VALIDATOR") == "default":
            return super().get_validator()
        return CapturingValidator(self.schema) if self.validate_schema else None

    def process_batch(self, context: dict) -> None:
        context.clear()


class NullTarget(Target):
    name = "target-null"
    config_jsonschema = th.PropertiesList().to_dict()
    default_sink_class = NullSink


class NullTargetSameReader(NullTarget):
    message_reader_class = SingerInput


if __name__ == "__main__":
    if os.environ.get("NULL_TARGET_READER") == "target-omnisend":
        NullTargetSameReader.cli()
    else:
        NullTarget.cli()
