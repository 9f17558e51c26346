"""The `target-omnisend` command: signals are owned from the first instant.

Importing the SDK takes most of a second; the SDK installs its signal handlers only when
the target object is built, and the run pipeline takes over after that. A SIGTERM
(Meltano cancelling a job) or Ctrl-C in that first second would otherwise end the
process by the signal, or with a KeyboardInterrupt traceback. Nothing has been read or
sent yet, so the honest outcome is one line and exit 128 + signal.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
from types import FrameType


def _cancelled_at_start(signum: int, frame: FrameType | None) -> None:
    del frame
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    name = signal.Signals(signum).name
    sys.stderr.write(
        f"{now} | ERROR    | target-omnisend | Run cancelled by {name} before it started; "
        "nothing was read or sent and no STATE was emitted\n"
    )
    sys.stderr.flush()
    os._exit(128 + signum)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _cancelled_at_start)
    from target_omnisend.target import TargetOmnisend  # noqa: PLC0415 (after the handlers)

    TargetOmnisend.cli()


if __name__ == "__main__":
    main()
