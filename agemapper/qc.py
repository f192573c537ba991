"""Quality-control policy: stop on bad input (``strict``) or leave the subject out (``skip``).

Under ``strict`` the first problem raises an :class:`~agemapper.errors.InputDataError` naming
the subject, the file and what is wrong. Under ``skip`` the subject is left out of that stage
(for that contrast), the problem is logged and recorded in a QC table, and the stage goes on.
"""

from __future__ import annotations

import logging

import pandas as pd

from agemapper.errors import ConfigError, InputDataError

POLICIES = ("strict", "skip")
COLUMNS = ["stage", "contrast", "sex", "split", "subject", "file", "problem"]
# The one line of a QC table in which nothing was left out: an empty file would not say
# whether the check ran and found nothing, or never ran.
NONE = "none: no subject was left out"

log = logging.getLogger(__name__)


class QCLog:
    """Collects the subjects a stage leaves out, or raises under the strict policy."""

    def __init__(self, policy: str, stage: str, **context):
        if policy not in POLICIES:
            raise ConfigError(f"qc policy {policy!r} is not one of {POLICIES}")
        self.policy = policy
        self.stage = stage
        self.context = context
        self.rows: list[dict] = []

    def handle(self, error: InputDataError) -> None:
        if self.policy == "strict":
            raise error
        log.warning("QC skip (%s): %s", self.stage, error)
        self.rows.append(
            {
                "stage": self.stage,
                "contrast": error.contrast or self.context.get("contrast", ""),
                "sex": self.context.get("sex", ""),
                "split": self.context.get("split", ""),
                "subject": error.subject or "",
                "file": error.path or "",
                "problem": error.problem,
            }
        )

    def frame(self) -> pd.DataFrame:
        """The subjects left out (no rows when none was)."""
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def table(self) -> pd.DataFrame:
        """The table to write: :meth:`frame`, or its explicit "none" line."""
        return with_none_line(self.frame(), self.stage, **self.context)

    def __len__(self) -> int:
        return len(self.rows)


def with_none_line(frame: pd.DataFrame, stage: str, **context) -> pd.DataFrame:
    """``frame``, or when it has no rows, one row saying so (problem ``NONE``)."""
    if len(frame):
        return frame
    row = {c: "" for c in COLUMNS} | {k: str(v) for k, v in context.items() if k in COLUMNS}
    return pd.DataFrame([row | {"stage": stage, "problem": NONE}], columns=COLUMNS)


def read_tables(paths) -> pd.DataFrame:
    """Concatenate QC tables into one, without their "none" lines (and empty files)."""
    frames = [pd.read_csv(p, sep="\t", dtype=str).fillna("") for p in paths]
    frames = [f[f.problem != NONE] for f in frames if len(f)]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
