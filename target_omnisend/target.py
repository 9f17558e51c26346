"""TargetOmnisend: name, configuration schema, sink class, and the hand-over to the run
pipeline (which owns delivery, checkpoints, cancel and the end of the run)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from decimal import Decimal
from types import FrameType
from typing import Any

import click
from dotenv import find_dotenv, load_dotenv
from singer_sdk.configuration._dict_config import parse_environment_config
from singer_sdk.exceptions import ConfigValidationError, FatalSyncError
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.mapper import RemoveRecordTransform
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.target_base import Target

from target_omnisend.api import LATEST_VERSION
from target_omnisend.batchfiles import batch_records
from target_omnisend.config_schema import CONFIG_SCHEMA
from target_omnisend.pipeline import RunPipeline
from target_omnisend.privacy import one_line_error, secrets_in_use
from target_omnisend.reader import SingerInput, encode_state
from target_omnisend.settings import load_settings
from target_omnisend.sinks import ContactsSink
from target_omnisend.unknown_settings import warn_unknown_settings

#: `target-omnisend --help` (click rewraps paragraphs; `\b` keeps a block as written).
HELP = """Deliver contact segments from any Singer tap to Omnisend.

Reads Singer messages on stdin; each stream is one segment. Its records become Omnisend
contacts (email required), tagged `segment:<stream>` and kept in a saved segment of the
same name. Bad records go to the rejected-records file with a reason; STATE is printed
only once everything before it is delivered.

\b
Examples:
  # a JSONL export, with settings in a file
  python samples/to_singer.py samples/vip_buyers.jsonl --stream vip_buyers \\
    | target-omnisend --config config.json
\b
  # any tap, settings from TARGET_OMNISEND_* variables (or a .env file here);
  # a dry run writes the requests to omnisend_dry_run.jsonl and sends nothing
  TARGET_OMNISEND_API_KEY=... TARGET_OMNISEND_DRY_RUN=true \\
    tap-postgres --config tap.json --catalog catalog.json | target-omnisend --config ENV

Every setting: target-omnisend --about --format=markdown
"""


class TargetOmnisend(Target):
    """Singer target that upserts segment members as Omnisend contacts."""

    name = "target-omnisend"
    config_jsonschema = CONFIG_SCHEMA
    default_sink_class = ContactsSink
    #: Input errors name the line number, never the line (it may hold a profile).
    message_reader_class = SingerInput

    def __init__(self, *args: Any, config: Any = None, **kwargs: Any) -> None:
        if isinstance(config, dict):
            # The SDK reads --config files' numbers as exact Decimals and then checks them
            # against the schema's float bounds: Decimal('0.1') is below the float 0.1.
            config = {key: _json_number(value) for key, value in config.items()}
        super().__init__(*args, config=config, **kwargs)
        warn_unknown_settings(self.config, self.config_jsonschema, self.logger)
        settings = load_settings(self.config)
        if settings.segment_tag and not settings.generation.has_tags_endpoint:
            self.logger.warning(
                "segment_tag is not applied: Omnisend API %s has no tags endpoint, so contacts "
                "are delivered untagged. Use api_version %s for segment tags, or set "
                "segment_tag to an empty string to silence this warning.",
                settings.generation.name,
                LATEST_VERSION,
            )
        self.pipeline = RunPipeline.start(settings, self.logger)
        # The pipeline is the one ordered consumer (delivery is concurrent behind it): the
        # SDK's drains on parallel threads would hand segments over in a random order.
        self.max_parallelism = 1
        # The SDK drains (and so checkpoints) every _MAX_RECORD_AGE_IN_MINUTES.
        self._MAX_RECORD_AGE_IN_MINUTES = settings.state_interval / 60

    @classproperty
    def _env_var_config(cls) -> dict[str, Any]:
        """The SDK turns TARGET_OMNISEND_* strings into integers and booleans but leaves
        `number` settings as strings, which then fail validation: convert them too."""
        config_jsonschema = cls.config_jsonschema
        cls.append_builtin_config(config_jsonschema)
        # The SDK looks for a .env upwards from its own install folder, not from where the
        # command runs: read the nearest .env from the current folder (set variables win).
        load_dotenv(find_dotenv(usecwd=True), override=False)
        config = parse_environment_config(
            config_jsonschema, cls._env_var_prefix, dotenv_path=os.devnull
        )
        properties = cls.config_jsonschema.get("properties", {})
        for key, value in config.items():
            types = properties.get(key, {}).get("type")
            types = types if isinstance(types, list) else [types]
            if isinstance(value, str) and "number" in types:
                with contextlib.suppress(ValueError):  # else validation names the setting
                    config[key] = float(value)
        return config

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, with a description and examples for `--help`."""
        command = super().get_singer_command()
        command.help = HELP
        return command

    # -- the run pipeline decides; the SDK's hooks only hand over -----------------------

    def _write_state_message(self, state: dict) -> None:
        """STATE only once every record before it has a final outcome, and never in a dry
        run or after a cancel."""
        if self.pipeline.checkpoint():
            sys.stdout.write(encode_state(state) + "\n")  # exact Decimal bookmarks
            sys.stdout.flush()

    def _process_activate_version_message(self, message_dict: dict) -> None:
        """ACTIVATE_VERSION marks a full-table read (of every stream the tap's stream is
        mapped to): only such streams may be mirrored. Contacts have no table versions."""
        self._assert_line_requires(message_dict, requires={"stream"})
        for stream_map in self.mapper.stream_maps.get(message_dict["stream"], []):
            if not isinstance(stream_map, RemoveRecordTransform):  # a stream mapped away
                self.pipeline.read_in_full(stream_map.stream_alias)

    def _process_batch_message(self, message_dict: dict) -> None:
        """Records of a BATCH message take the RECORD path, one by one (stream maps,
        validation, mapping, counters, drains): the SDK's own route hands whole files
        to the sink unvalidated and unmapped. See `batchfiles.py`."""
        self._assert_line_requires(message_dict, requires={"stream", "encoding", "manifest"})
        stream = message_dict["stream"]
        where = f"line {getattr(self.message_reader, 'line_number', '?')} (BATCH)"
        for record in batch_records(message_dict, where):
            self._process_record_message({"type": "RECORD", "stream": stream, "record": record})

    def process_endofpipe(self) -> None:
        super().process_endofpipe()
        self.pipeline.finish()

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """Not the SDK's drain-and-STATE: a cancel must not checkpoint records in hand."""
        del frame
        pipeline: RunPipeline | None = getattr(self, "pipeline", None)
        if pipeline is None:  # still starting up: nothing was read, nothing to undo
            self._exit("Run cancelled before it started; nothing was sent", code=128 + signum)
        else:
            pipeline.cancel(signum)

    # -- one clear line instead of a traceback -----------------------------------------

    @classmethod
    def invoke(cls, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        try:
            super().invoke(*args, **kwargs)
        except ConfigValidationError as exc:
            errors = "; ".join(exc.errors or [str(exc)])
            cls._exit(f"Invalid configuration: {errors}", code=2)
        except FatalSyncError as exc:
            cls._exit(f"Run failed: {exc}. No STATE was emitted past the last delivered record.")
        except InvalidInputLine as exc:
            cls._exit(
                f"Input is not Singer: {exc}. No STATE was emitted past the last delivered record."
            )
        except json.JSONDecodeError as exc:
            cls._exit(f"Input is not Singer JSON (line {exc.lineno}): {exc.msg}")
        except Exception as exc:  # a bug or an unforeseen input: still one line, no STATE
            cls.logger.debug("Unexpected error", exc_info=True)
            cls._exit(
                f"Run failed: {type(exc).__name__}: {exc}. No STATE was emitted past the last "
                "delivered record (set log level DEBUG for the traceback)."
            )

    @classmethod
    def _exit(cls, message: str, code: int = 1) -> None:
        cls.logger.error("%s", one_line_error(message, secrets_in_use(sys.argv, os.environ)))
        sys.exit(code)


def _json_number(value: Any) -> Any:
    """A setting's Decimal as the int or float a JSON reader would have given."""
    if not isinstance(value, Decimal):
        return value
    as_float = float(value)  # 1e10000000 is inf, as a JSON reader gives it: out of range
    if math.isfinite(as_float) and abs(as_float) < 2**53 and value == value.to_integral_value():
        return int(value)
    return as_float


if __name__ == "__main__":
    TargetOmnisend.cli()
