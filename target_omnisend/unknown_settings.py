"""A misspelt setting must not pass silently.

JSON schema lets unknown config keys through (and the SDK must, since Meltano and
orchestrators add their own), so `omnisend_segmnt_name: vip` used to be ignored without
a word and the run exited 0 doing something else than asked. Here each unknown key
becomes one warning line naming the closest known setting. The run goes on: failing
would break configs shared across versions of the target.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Collection, Mapping
from typing import Any

ENV_PREFIX = "TARGET_OMNISEND_"
#: How alike a name must be to a known setting to be offered as "did you mean".
_CLOSE = 0.6
#: Environment variables are shared with other programs and plugins, so only names this
#: alike to one of our settings are taken for misspellings of it.
_CLOSE_ENV = 0.8


def _closest(name: str, known: Collection[str], cutoff: float) -> str | None:
    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def unknown_settings(config: Mapping[str, Any], known: Collection[str]) -> list[str]:
    """One ready-made warning per config key the target does not know (the value is
    never shown: it may be a secret)."""
    warnings = []
    for key in sorted(set(config) - set(known)):
        closest = _closest(key, known, _CLOSE)
        hint = (
            f"did you mean {closest!r}?"
            if closest
            else "it is not a target-omnisend setting (see target-omnisend --about)"
        )
        warnings.append(f"Unknown setting {key!r} is ignored; {hint}")
    return warnings


def unknown_env_settings(
    environ: Mapping[str, str], known: Collection[str], prefix: str = ENV_PREFIX
) -> list[str]:
    """Warnings for `TARGET_OMNISEND_*` variables that look like a misspelt setting.

    Not every variable with our prefix is ours: Meltano gives an inheriting plugin such as
    `target-omnisend-staging` variables like `TARGET_OMNISEND_STAGING_API_KEY`. A name that
    ends in one of our settings is taken for such a plugin's; any other name is reported
    only when it is very close to one of our settings.
    """
    warnings = []
    for variable in sorted(environ):
        if not variable.startswith(prefix):
            continue
        name = variable[len(prefix) :].lower()
        if name in known or any(name.endswith(f"_{k}") for k in known):
            continue
        closest = _closest(name, known, _CLOSE_ENV)
        if closest:
            warnings.append(
                f"Unknown environment variable {variable} is ignored; did you mean "
                f"{prefix}{closest.upper()}?"
            )
    return warnings


def warn_unknown_settings(
    config: Mapping[str, Any],
    config_jsonschema: Mapping[str, Any],
    logger: logging.Logger,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Log the warnings above. `config_jsonschema` is the target's schema after the SDK
    merged its own settings into it (`stream_maps`, `batch_size_rows`, flattening, …),
    which it does before validating the config, so those count as known."""
    known = set(config_jsonschema.get("properties") or {})
    env = os.environ if environ is None else environ
    for line in unknown_settings(config, known) + unknown_env_settings(env, known):
        logger.warning("%s", line)
