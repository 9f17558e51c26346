"""Error types, built on the SDK's own exceptions so the SDK and users see familiar types.

Every error that ends a run carries a one-line message that says what to do; the
CLI prints exactly that line (never a traceback) and exits non-zero.
"""

from __future__ import annotations

from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError

from target_omnisend.privacy import one_line_error

__all__ = [
    "AuthenticationError",
    "Cancelled",
    "ConfigError",
    "DeliveryError",
    "EmailFieldMissing",
    "FatalAPIError",
    "RetriableAPIError",
]


class ConfigError(ConfigValidationError):
    """The configuration cannot work; raised before any input is read. The message is
    made one line here: it may quote a user's text (a mapping key with a line break)."""

    def __init__(self, message: str) -> None:
        message = one_line_error(message, ())
        super().__init__(message, errors=[message])


class EmailFieldMissing(ConfigError):
    """A stream's SCHEMA has no field at `email_field`: every record would be rejected.
    Raised when the SCHEMA arrives, before any of the stream's records is read."""


class AuthenticationError(FatalAPIError):
    """Omnisend refused the API key (401/403): retrying cannot help."""


class DeliveryError(FatalAPIError):
    """Omnisend stayed unavailable beyond the retry budget; the run must stop without
    advancing STATE so that a re-run resumes from the last delivered record."""


class Cancelled(Exception):
    """The run is stopping (a signal or a failure elsewhere): whatever waited gives up at
    once, nothing new is sent, and no STATE follows."""

    def __init__(self, message: str = "delivery cancelled: the run is stopping") -> None:
        super().__init__(message)


class AmbiguousWrite(DeliveryError):
    """A write that is not safe to repeat (POST /segments: no idempotency key) timed out
    or failed in a way that leaves open whether Omnisend applied it. The caller looks
    before it writes again; the client never retries such a write blindly."""


class MissingScope(FatalAPIError):
    """Omnisend refused a call for want of an API-key scope (403), e.g. `segments.write`.
    Contacts were delivered with the same key: only this optional feature is off."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"the API key lacks the '{scope}' scope")
        self.scope = scope
