"""Glue for the workflow's script adapters: logging to the rule's log file, and errors.

:func:`log_to` sends stderr and log records to the rule's log. It also installs the job's
error handling: an error the user can cause (:class:`~agemapper.errors.AgeMapperError`, a full
disk, a permission problem) is one line naming the file (and subject, contrast, key), written
to the log and to the console, with exit status 1 and no traceback. Anything else is a bug of
ours and keeps its traceback, in the log.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys

from agemapper.errors import AgeMapperError

log = logging.getLogger("agemapper")

# OSErrors that are the machine's or the user's, not the code's: said in one line
USER_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EROFS: "read-only file system",
}


def describe(exc: BaseException) -> str | None:
    """The one-line message for an error the user can cause, else None (a bug: traceback)."""
    if isinstance(exc, AgeMapperError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"{USER_OS_ERRORS[exc.errno]}{where} ({exc.strerror})"
    return None


def _excepthook(console):
    previous = sys.excepthook

    def hook(kind, exc, tb):
        message = describe(exc)
        if message is None or isinstance(exc, KeyboardInterrupt):
            previous(kind, exc, tb)
            return
        logging.getLogger("agemapper").error(message)
        if console is not None and console is not sys.stderr:
            print(f"agemapper: {message}", file=console, flush=True)
        # returning from the hook ends the interpreter with exit status 1

    return hook


def log_to(path) -> logging.Logger:
    """Send stderr and log records (INFO and up, time-stamped) to the rule's log file."""
    console = sys.stderr
    if path:
        stream = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    logging.captureWarnings(True)
    sys.excepthook = _excepthook(console)
    if os.environ.get("SLURM_JOB_ID"):
        # which cluster job wrote this log (sacct -j ID, seff ID), and where
        log.info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"], socket.gethostname())
    return log
