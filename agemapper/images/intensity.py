"""Is a volume's intensity like the training data's? Per-subject and per-cohort checks.

Grid, voxel size and orientation say a file is on the right grid, not that its numbers mean what
the network learned: a map saved x1000, an integer file with an intercept (every background
voxel 100), a cohort from another pipeline at twice the scale all pass those checks. Each
preprocessed volume gets robust statistics, after the contrast's normalisation and scale factor
(what the network sees):

- ``nonzero``: the fraction of non-zero voxels in the crop (the brain mask's coverage);
- ``median_abs``: the median of |value| over the non-zero voxels;
- ``p99_abs``: their 99th percentile
(all three on every 8th voxel, every other one along each axis, of the study's grids).

The training split is the reference. A subject is an outlier when a statistic's log differs
from the reference's median log by more than ``max(ROBUST_SDS * s, log SUBJECT_FACTOR)``, ``s``
being 1.4826 x the median absolute deviation of the reference's logs; a split (or a new cohort)
is off when the median of its logs differs from the reference's by more than
``log COHORT_FACTOR``. The same reference, stored with a network, checks a new cohort in apply
mode: one mechanism for both.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

STATISTICS = ("nonzero", "median_abs", "p99_abs")
DESCRIBE = {
    "nonzero": "fraction of non-zero voxels",
    "median_abs": "median |intensity| after scaling",
    "p99_abs": "99th percentile of |intensity| after scaling",
}
ROBUST_SDS = 8.0
SUBJECT_FACTOR = 1.5  # a subject within x1.5 of the reference median always passes
COHORT_FACTOR = 1.5  # a split's median beyond x1.5 of the reference's is a different scale
MIN_REFERENCE = 5  # fewer reference subjects: no check (logged)
# volume_statistics: volumes this large (80x96x80 at 2 mm is 614,400) take median and 99th
# percentile on every 8th voxel; within 3% of the whole volume's (tests/test_decode_once.py)
SAMPLE_FROM = 500_000


def volume_statistics(
    scaled: np.ndarray, sample: np.ndarray, scaled_sample: np.ndarray | None = None
) -> dict:
    """Statistics of one volume: ``scaled`` as stored, ``sample`` a subsample of the crop,
    ``scaled_sample`` (if the caller has it) ``scaled[::2, ::2, ::2]``.

    Like ``nonzero`` (on ``sample``, every 8th voxel of the crop), the median and 99th
    percentile of a volume of the study's grids (``SAMPLE_FROM`` voxels or more) are those of
    every 8th voxel of ``scaled`` (every other one along each axis): 10^4-10^6 non-zero voxels,
    a QC statistic's worth, at an eighth of the cost of the whole volume's (its sort was half
    of preprocessing's own arithmetic). They are numpy's (``np.median``, ``np.percentile``,
    linear interpolation) of those voxels, from one sort.
    """
    if scaled.size < SAMPLE_FROM:
        sub = scaled
    else:
        sub = scaled[::2, ::2, ::2] if scaled_sample is None else scaled_sample
    inside = sub[sub != 0]
    if inside.size == 0:  # so sparse that every 8th voxel misses it: the whole volume's
        inside = scaled[scaled != 0]
    if inside.size == 0:
        return {"nonzero": 0.0, "median_abs": 0.0, "p99_abs": 0.0}
    np.abs(inside, out=inside)
    inside.sort()
    return {
        "nonzero": float(np.count_nonzero(sample)) / sample.size,
        "median_abs": median_of_sorted(inside),
        "p99_abs": percentile_of_sorted(inside, 99),
    }


def median_of_sorted(s: np.ndarray) -> float:
    """``np.median`` of a sorted 1D array, bit for bit, without numpy's selection pass."""
    n = s.size
    if n and np.isnan(s[-1]):  # NaN sorts last; numpy's median is then NaN
        return float("nan")
    half = n // 2
    return float(np.mean(s[half : half + 1] if n % 2 else s[half - 1 : half + 1]))


def percentile_of_sorted(s: np.ndarray, q: float) -> float:
    """``np.percentile(s, q)`` (method "linear", ``q`` a Python number) of a sorted 1D array,
    bit for bit: numpy's virtual index, neighbours and interpolation, without its selection."""
    n = s.size
    if n and np.isnan(s[-1]):
        return float("nan")
    quantile = q / 100
    virtual = n * quantile + (1 + quantile * (1 - 1 - 1)) - 1  # numpy's, alpha = beta = 1
    if virtual >= n - 1:
        below = above = n - 1
    elif virtual < 0:
        below = above = 0
    else:
        below = math.floor(virtual)
        above = below + 1
    a, b = s[below], s[above]
    t = virtual - below
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


def summarise(table: pd.DataFrame) -> dict:
    """The reference: per statistic, the median and robust spread of the logs, and n."""
    out = {}
    for stat in STATISTICS:
        if stat not in table.columns:
            continue
        logs = np.log(table[stat].to_numpy(dtype=float).clip(1e-12))
        median = float(np.median(logs)) if logs.size else float("nan")
        mad = float(np.median(np.abs(logs - median))) if logs.size else float("nan")
        out[stat] = {"median_log": median, "spread_log": 1.4826 * mad, "n": int(logs.size)}
    return out


def _limit(ref: dict) -> float:
    return max(ROBUST_SDS * ref["spread_log"], math.log(SUBJECT_FACTOR))


def subject_outliers(table: pd.DataFrame, reference: dict) -> pd.DataFrame:
    """Rows of ``table`` (subject + statistics) outside the reference, one per statistic.

    Columns: subject, statistic, value, reference (the reference's median), ratio, limit
    (the largest ratio allowed, either way), problem (a sentence for the QC table).
    """
    rows = []
    for stat, ref in reference.items():
        if stat not in table.columns or ref["n"] < MIN_REFERENCE:
            continue
        limit = _limit(ref)
        centre = math.exp(ref["median_log"])
        values = table[stat].to_numpy(dtype=float)
        logs = np.log(values.clip(1e-12))
        for subject, value, lg in zip(table.subject, values, logs, strict=True):
            if abs(lg - ref["median_log"]) > limit:
                ratio = value / centre if centre else float("inf")
                rows.append(
                    {
                        "subject": subject,
                        "statistic": stat,
                        "value": value,
                        "reference": centre,
                        "ratio": ratio,
                        "limit": math.exp(limit),
                        "problem": (
                            f"{DESCRIBE[stat]} {value:.4g} is {ratio:.3g}x the training split's "
                            f"median {centre:.4g} (allowed x{math.exp(limit):.3g} either way): "
                            "a different intensity scale, offset or mask?"
                        ),
                    }
                )
    return pd.DataFrame(
        rows, columns=["subject", "statistic", "value", "reference", "ratio", "limit", "problem"]
    )


def cohort_shift(table: pd.DataFrame, reference: dict) -> list[str]:
    """Statistics whose median over ``table`` is off the reference's by more than x1.5."""
    problems = []
    for stat, ref in reference.items():
        if stat not in table.columns or ref["n"] < MIN_REFERENCE or len(table) == 0:
            continue
        median = float(np.median(np.log(table[stat].to_numpy(dtype=float).clip(1e-12))))
        if abs(median - ref["median_log"]) > math.log(COHORT_FACTOR):
            ratio = math.exp(median - ref["median_log"])
            problems.append(
                f"{DESCRIBE[stat]}: the median over its {len(table)} subjects is {ratio:.3g}x the "
                f"training split's (allowed x{COHORT_FACTOR:g} either way): data from another "
                "pipeline or intensity scale?"
            )
    return problems
