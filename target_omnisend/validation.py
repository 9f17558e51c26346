"""Record validation through the SDK's validator hook, compiled once per schema.

The SDK's default jsonschema validator costs most of a run's CPU; fastjsonschema
compiles the schema to Python. Invalid records are not raised as exceptions (the SDK
would log a traceback per record, or stop the run): the error is kept so the sink can
reject the record with a reason, which is the outcome a user needs.
"""

from __future__ import annotations

from typing import Any

import fastjsonschema
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks.core import BaseJSONSchemaValidator, JSONSchemaValidator


class CapturingValidator(BaseJSONSchemaValidator):
    """Validates like the SDK but hands the error to the sink instead of raising."""

    def __init__(self, schema: dict[str, Any]) -> None:
        super().__init__(schema)
        self.last_error: str | None = None
        try:
            self._compiled = fastjsonschema.compile(schema, use_default=False, use_formats=False)
        except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError):
            self._compiled = None
            self._fallback = JSONSchemaValidator(schema)

    def validate(self, record: dict[str, Any]) -> None:
        self.last_error = None
        if self._compiled is not None:
            try:
                self._compiled(record)
            except fastjsonschema.JsonSchemaValueException as exc:
                # fastjsonschema names the path and rule, never the value: safe to log.
                self.last_error = f"record does not match its schema: {exc.message}"
            return
        try:
            self._fallback.validate(record)
        except InvalidRecord as exc:
            cause = exc.__cause__
            path = ".".join(map(str, getattr(cause, "absolute_path", []))) or "record"
            rule = getattr(cause, "validator", "schema")
            self.last_error = f"record does not match its schema: {path} fails '{rule}'"

    def take_error(self) -> str | None:
        """The error of the record validated last (the SDK validates, then processes)."""
        error, self.last_error = self.last_error, None
        return error
