"""The `target-omnisend` command: signals are owned from the first instant.

Importing the SDK takes most of a second; the SDK installs its signal handlers only when
the target object is built, and the run pipeline takes over after that. A SIGTERM
(Meltano cancelling a job) or Ctrl-C in that first second would otherwise end the
process by the signal, or with a KeyboardInterrupt traceback. Nothing has been read or
sent yet, so the honest outcome is one line and exit 128 + signal.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import sys
from types import FrameType


def _error_line(message: str) -> None:
    """One log-shaped line on stderr, for the moments before the SDK's logging exists."""
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    sys.stderr.write(f"{now} | ERROR    | target-omnisend | {message}\n")
    sys.stderr.flush()


def _cancelled_at_start(signum: int, frame: FrameType | None) -> None:
    del frame
    name = signal.Signals(signum).name
    _error_line(
        f"Run cancelled by {name} before it started; "
        "nothing was read or sent and no STATE was emitted"
    )
    os._exit(128 + signum)


def _config_files(args: list[str]) -> list[str]:
    """The files named by `--config` (any number of times; `ENV` is not a file)."""
    named = [value for flag, value in itertools.pairwise(args) if flag == "--config"]
    named += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    return [name for name in named if name != "ENV"]


def _config_file_problem(name: str) -> str | None:
    """Why a --config file cannot be a configuration, if it cannot: checked here because
    the SDK reads these files while parsing arguments, where any error is a traceback."""
    if not name:
        return "an empty path (an unset variable?)"
    try:
        with open(name, encoding="utf-8") as fh:
            loaded = json.load(fh)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    except RecursionError:
        return "not JSON (nested too deeply)"
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        where = f" (line {exc.lineno} column {exc.colno})" if hasattr(exc, "lineno") else ""
        return f"not JSON{where}"
    if not isinstance(loaded, dict):
        return f"not a JSON object (a {type(loaded).__name__})"
    return None


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _cancelled_at_start)
    for name in _config_files(sys.argv[1:]):
        problem = _config_file_problem(name)
        if problem is not None:
            _error_line(f"Invalid configuration: --config {name!r}: {problem}")
            sys.exit(2)
    from target_omnisend.privacy import one_line_error, secrets_in_use  # noqa: PLC0415
    from target_omnisend.target import TargetOmnisend  # noqa: PLC0415 (after the handlers)

    try:
        TargetOmnisend.cli()
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        # The SDK reads --config files while parsing arguments, before the target's own
        # one-line errors can apply: a missing, unreadable or non-JSON file ends here.
        files = ", ".join(_config_files(sys.argv[1:])) or "(none named)"
        message = f"Invalid configuration: cannot read --config {files}: {exc}"
        _error_line(one_line_error(message, secrets_in_use(sys.argv, os.environ)))
        sys.exit(2)


if __name__ == "__main__":
    main()
