"""TargetOmnisend: configuration, wiring, and the promises around STATE and exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

from singer_sdk.configuration._dict_config import parse_environment_config
from singer_sdk.exceptions import ConfigValidationError, FatalSyncError
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.target_base import Target

from target_omnisend.api import LATEST_VERSION
from target_omnisend.client import OmnisendClient
from target_omnisend.config_schema import CONFIG_SCHEMA
from target_omnisend.delivery import DeliveryEngine, Item
from target_omnisend.dryrun import DryRunWriter
from target_omnisend.mirror import mirror_stream
from target_omnisend.outcomes import Outcomes
from target_omnisend.privacy import redact
from target_omnisend.progress import ProgressReporter
from target_omnisend.ratelimit import RateLimits
from target_omnisend.reader import SingerInput
from target_omnisend.settings import load_settings
from target_omnisend.sinks import ContactsSink
from target_omnisend.store import FingerprintStore, account_scope
from target_omnisend.unknown_settings import warn_unknown_settings


class TargetOmnisend(Target):
    """Singer target that upserts segment members as Omnisend contacts."""

    name = "target-omnisend"
    config_jsonschema = CONFIG_SCHEMA
    default_sink_class = ContactsSink
    #: Input errors name the line number, never the line (it may hold a profile).
    message_reader_class = SingerInput

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Every sink ever created, including those retired by a schema change: each
        #: may still carry contacts that must go out before STATE.
        self.all_sinks: list[ContactsSink] = []
        super().__init__(*args, **kwargs)
        warn_unknown_settings(self.config, self.config_jsonschema, self.logger)
        self.started_at = time.monotonic()
        self.settings = load_settings(self.config)
        if self.settings.segment_tag and not self.settings.generation.has_tags_endpoint:
            self.logger.warning(
                "segment_tag is not applied: Omnisend API %s has no tags endpoint, so contacts "
                "are delivered untagged. Use api_version %s for segment tags, or set "
                "segment_tag to an empty string to silence this warning.",
                self.settings.generation.name,
                LATEST_VERSION,
            )
        self.outcomes = Outcomes(self.settings.rejected_records_path, self.logger)
        self.client = OmnisendClient(
            base_url=self.settings.api_url,
            api_key=self.settings.api_key,
            generation=self.settings.generation,
            limits=RateLimits(
                self.settings.requests_per_minute, self.settings.tags_requests_per_minute
            ),
            timeout=self.settings.request_timeout,
            max_retries=self.settings.max_retries,
            pool_size=self.settings.max_concurrency + 2,
            logger=self.logger,
        )
        self.client.check_connection()
        self.store = (
            FingerprintStore(
                self.settings.fingerprint_store_path,
                account_scope(self.settings.api_url, self.settings.api_key),
                self.settings.mapping_hash(),
            )
            if self.settings.fingerprint_store_path
            else None
        )
        if self.store is not None and self.store.invalidated:
            self.logger.info("Mapping configuration changed: every contact is sent again")
        self.dry_run = (
            DryRunWriter(self.settings.dry_run_path, self.settings.generation)
            if self.settings.dry_run
            else None
        )
        self.complete_streams: set[str] = set()
        self.engine = DeliveryEngine(
            self.client,
            self,
            max_concurrency=self.settings.max_concurrency,
            max_pending_batches=self.settings.max_pending_batches,
            poll_interval=self.settings.batch_poll_interval,
            batch_timeout=self.settings.batch_timeout,
            logger=self.logger,
        )
        # The SDK drains (and so checkpoints) every _MAX_RECORD_AGE_IN_MINUTES.
        self._MAX_RECORD_AGE_IN_MINUTES = self.settings.state_interval / 60
        self.progress = ProgressReporter(
            self.outcomes, self.logger, self.settings.progress_interval
        )

    @classproperty
    def _env_var_config(cls) -> dict[str, Any]:
        """The SDK turns TARGET_OMNISEND_* strings into integers and booleans but leaves
        `number` settings as strings, which then fail validation: convert them too."""
        config_jsonschema = cls.config_jsonschema
        cls.append_builtin_config(config_jsonschema)
        config = parse_environment_config(config_jsonschema, cls._env_var_prefix)
        properties = cls.config_jsonschema.get("properties", {})
        for key, value in config.items():
            types = properties.get(key, {}).get("type")
            types = types if isinstance(types, list) else [types]
            if isinstance(value, str) and "number" in types:
                with contextlib.suppress(ValueError):  # else validation names the setting
                    config[key] = float(value)
        return config

    # -- outcomes reported by the delivery engine --------------------------------------

    def delivered_items(self, items: list[Item]) -> None:
        by_stream: dict[str, list[Item]] = {}
        for item in items:
            by_stream.setdefault(item.stream, []).append(item)
        for stream, delivered in by_stream.items():
            self.outcomes.delivered(stream, len(delivered))
            if self.store is not None:
                self.store.confirm(
                    stream,
                    [(i.email, i.fingerprint) for i in delivered if i.fingerprint is not None],
                    self.outcomes.run_id,
                )

    def rejected_item(self, item: Item, code: str, reason: str) -> None:
        self.outcomes.rejected(item.stream, item.record, code, reason, email=item.email)

    # -- STATE only after delivery ----------------------------------------------------

    def _barrier(self) -> None:
        """Every record handed to a sink so far has a final, durable outcome."""
        for sink in self.all_sinks:
            sink.flush()
        self.engine.wait_idle()
        self.outcomes.sync()
        if self.store is not None and self.dry_run is None:
            self.store.commit()

    def _write_state_message(self, state: dict) -> None:
        """The SDK writes STATE after handing every sink's records to process_batch();
        delivery is asynchronous, so first wait until each of them is confirmed."""
        self._barrier()
        super()._write_state_message(state)

    def _process_activate_version_message(self, message_dict: dict) -> None:
        """ACTIVATE_VERSION marks a full-table read: the stream may be mirrored. Contacts
        have no table versions to switch, so that is all it means here."""
        self._assert_line_requires(message_dict, requires={"stream"})
        self.complete_streams.add(message_dict["stream"])

    def process_endofpipe(self) -> None:
        super().process_endofpipe()
        self._barrier()
        if self.settings.sync_mode == "mirror":
            for stream in list(self.outcomes.streams):
                mirror_stream(self, stream)
        self.engine.close()
        self.client.close()
        self.outcomes.close()
        if self.store is not None:
            self.store.close()
        if self.dry_run is not None:
            self.dry_run.close()
            self.logger.info(
                "Dry run: %d contact(s) in %d request(s) written to %s; nothing was sent",
                self.dry_run.contacts,
                self.dry_run.requests,
                self.dry_run.path,
            )
        self._log_summary()

    def _log_summary(self) -> None:
        self.progress.stop()
        elapsed = time.monotonic() - self.started_at
        for stream, counts in self.outcomes.totals().items():
            self.logger.info(
                "Summary for stream '%s': received=%d delivered=%d rejected=%d unchanged=%d "
                "merged_duplicates=%d rejected_by_reason=%s warnings=%s",
                stream,
                counts["received"],
                counts["delivered"],
                counts["rejected"],
                counts["unchanged"],
                counts["merged_duplicates"],
                json.dumps(counts["rejected_by_reason"]),
                json.dumps(counts["warnings"]),
            )
        if self.settings.summary_path:
            summary = {
                "run_id": self.outcomes.run_id,
                "dry_run": self.settings.dry_run,
                "seconds": round(elapsed, 3),
                "streams": self.outcomes.totals(),
                "requests": self.client.stats.requests,
                "retries": self.client.stats.retries,
                "rate_limited": self.client.stats.rate_limited,
                "batches": self.engine.stats.batches_sent,
                "tag_calls": self.engine.stats.tag_calls,
                "mirror": self.outcomes.mirror,
            }
            with open(self.settings.summary_path, "w", encoding="utf-8") as fh:
                json.dump(summary, fh, indent=2)
        stats = self.client.stats
        self.logger.info(
            "Run finished in %.1fs: %d requests (%d retries, %d rate-limited), %d batches, "
            "%d polls",
            elapsed,
            stats.requests,
            stats.retries,
            stats.rate_limited,
            self.engine.stats.batches_sent,
            self.engine.stats.polls,
        )

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
        secrets = _secrets_from_env()
        cls.logger.error("%s", redact(message, *secrets))
        sys.exit(code)


def _secrets_from_env() -> list[str]:
    return [v for k, v in os.environ.items() if k.endswith("API_KEY") and v]


if __name__ == "__main__":
    TargetOmnisend.cli()
