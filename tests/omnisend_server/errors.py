"""One error type for every refusal, rendered late in the caller's generation.

Handlers raise `ApiError`; only the wire layer decides whether it becomes an RFC 9457
problem (2026-03-15) or a v5 `{error, fields}` body. Batch items keep the `ApiError`
itself, so the same failure reads correctly through either generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

PROBLEM_BASE = "https://problems.omnisend.com/"  # as the 2026-03-15 docs name them


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where (`identifiers[0].id`), a stable code, and what to fix."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass
class ApiError(Exception):
    """A refusal with an HTTP status; `extra` lands in the problem body (e.g. retryAfter)."""

    status: int
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    slug: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"HTTP {self.status}: {self.detail}")

    @property
    def title(self) -> str:
        return TITLES.get(self.status, "Error")

    def problem(self, instance: str) -> dict[str, Any]:
        """RFC 9457 body, as the 2026-03-15 generation answers."""
        slug = self.slug or self.title.lower().replace(" ", "-")
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
        body.update(self.extra)
        return body

    def v5(self) -> dict[str, Any]:
        """`{error, fields}` body, as v5 answers: messages grouped by field."""
        fields: dict[str, list[str]] = {}
        for err in self.errors:
            fields.setdefault(err.field, []).append(err.message)
        body: dict[str, Any] = {"error": self.detail, "fields": fields}
        body.update(self.extra)
        return body


def validation_error(errors: list[FieldError], detail: str | None = None) -> ApiError:
    """400 listing every invalid field at once, so a client can fix them in one go."""
    return ApiError(
        400,
        detail or f"Request validation failed: {len(errors)} invalid field(s)",
        errors=errors,
        slug="validation-failed",
    )
