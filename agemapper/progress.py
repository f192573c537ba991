"""Progress of a long loop in the job's log: how far, how fast, and when it will be done.

One line about every tenth of the loop (and at its end), the same in every stage::

    T1_nonlinear: 450/1000 subjects, 12.3 subjects/s, ETA 45 s
    T1_nonlinear female: 12/250 epochs, 41.5 s/epoch, ETA <= 2.7 h | rep1 loss ...

The rate is the mean over this run (a resumed job counts from where it resumed). Hand-written
because it is a log line: progress-bar libraries (tqdm, rich) draw to a terminal, and a
Snakemake or SLURM job's log file is not one.
"""

from __future__ import annotations

import logging
import time

_log = logging.getLogger("agemapper")


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: ``45 s``, ``12 min``, ``2.7 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Log ``label: done/total units, rate, ETA`` as a loop advances.

    ``unit`` is singular (``"subject"``, ``"epoch"``); ``every`` is how many units apart the
    lines are (default: a tenth of ``total``); ``done`` is how many were done before this run
    (a resumed job); ``upper_bound`` marks the ETA as a bound (a loop that may stop early).
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "subject",
        *,
        log: logging.Logger | None = None,
        every: int | None = None,
        done: int = 0,
        upper_bound: bool = False,
    ):
        self.label, self.total, self.unit = label, int(total), unit
        self.log = log or _log
        self.every = max(1, every or self.total // 10)
        self.first = self.logged = int(done)
        self.upper_bound = upper_bound
        self.start = time.monotonic()

    def _rate(self, rate: float) -> str:
        if rate >= 1:
            return f"{rate:.1f} {self.unit}s/s"
        return f"{1 / rate:.1f} s/{self.unit}" if rate > 0 else f"- s/{self.unit}"

    def message(self, done: int, detail: str = "") -> str:
        elapsed = time.monotonic() - self.start
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
        left = max(self.total - done, 0)
        eta = duration(left / rate) if rate > 0 else "unknown"
        text = (
            f"{self.label}: {done}/{self.total} {self.unit}s, {self._rate(rate)}, "
            f"ETA {'<= ' if self.upper_bound and left else ''}{eta}"
        )
        return f"{text} | {detail}" if detail else text

    def update(self, done: int, detail: str = "") -> None:
        """``done`` units are finished (it may jump, a batch at a time); log a line when it
        passes a multiple of ``every``, and at the end.
        """
        if done // self.every > self.logged // self.every or (done >= self.total > self.logged):
            self.logged = done
            self.log.info("%s", self.message(done, detail))
