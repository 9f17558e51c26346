"""The README's fenced code blocks, as the tests that run them read them."""

from __future__ import annotations

from typing import Any

from tests.harness import REPO

#: The line before a README code block that holds Meltano commands a user types.
MARKER = "<!-- meltano-commands:"


def readme_code_blocks(*, with_language: bool = False) -> list[Any]:
    """(line before the fence, body) of every fenced code block of the README, or (line
    before, language, body) `with_language`."""
    blocks: list[Any] = []
    body: list[str] | None = None
    before = previous = language = ""
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if body is None:
                body, before, language = [], previous, line[3:].strip()
            else:
                text = "\n".join(body) + "\n"
                blocks.append((before, language, text) if with_language else (before, text))
                body = None
        elif body is not None:
            body.append(line)
        previous = line
    return blocks


def readme_meltano_blocks() -> list[str]:
    return [body for before, body in readme_code_blocks() if before.startswith(MARKER)]
