"""Glue for the workflow's script adapters: logging to the rule's log file."""

from __future__ import annotations

import logging
import os
import socket
import sys


def log_to(path) -> logging.Logger:
    """Send stderr and log records (INFO and up, time-stamped) to the rule's log file."""
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
    log = logging.getLogger("agemapper")
    if os.environ.get("SLURM_JOB_ID"):
        # which cluster job wrote this log (sacct -j ID, seff ID), and where
        log.info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"], socket.gethostname())
    return log
