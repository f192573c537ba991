"""Errors a user can cause are one line, in the job's log and on the console; bugs keep theirs."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = """
import sys
from agemapper.runner import log_to
from agemapper.errors import InputDataError
log = log_to(sys.argv[1])
log.info("working")
kind = sys.argv[2]
if kind == "input":
    raise InputDataError("file is missing", path="/d/1/T1.nii.gz", subject="1", contrast="vbm")
if kind == "disk":
    raise OSError(28, "No space left on device", "results/cache/vbm/female_train.cache")
raise KeyError("a bug of ours")
"""


def _job(tmp_path, kind):
    log = tmp_path / "job.log"
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), kind],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res, log.read_text()


@pytest.mark.parametrize(
    "kind, message",
    [
        ("input", "subject 1, contrast vbm, file /d/1/T1.nii.gz: file is missing"),
        ("disk", "no space left on the device writing results/cache/vbm/female_train.cache"),
    ],
)
def test_a_user_error_is_one_line_without_traceback(tmp_path, kind, message):
    res, log = _job(tmp_path, kind)
    assert res.returncode == 1
    assert res.stderr.startswith(f"agemapper: {message}") and res.stderr.count("\n") == 1
    assert message in log and "Traceback" not in log + res.stderr
    assert errno.ENOSPC == 28


def test_a_bug_keeps_its_traceback(tmp_path):
    res, log = _job(tmp_path, "bug")
    assert res.returncode == 1 and "Traceback" in log and "a bug of ours" in log
