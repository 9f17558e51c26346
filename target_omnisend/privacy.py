"""Keep personal data and secrets out of logs: profiles are personal data and logs are
shipped to places (CI, log aggregators) that the profile data never should be."""

from __future__ import annotations


def mask_email(email: str) -> str:
    """`jane.doe@example.com` -> `j***@example.com`: enough to find the record in the
    source, not enough to identify the person from a log line."""
    local, sep, domain = email.partition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"


def redact(text: str, *secrets: str | None) -> str:
    """Remove every secret from a text that is about to be logged or raised."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
