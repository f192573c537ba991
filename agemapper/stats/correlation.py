"""Pearson's r, guarded: the one correlation helper of the package.

Used for the brain-age metrics (:mod:`~agemapper.stats.deltas`), the demo's evaluation and the
figures (:mod:`agemapper.report`). scipy computes it; this only says what an undefined r is.
The association statistics compute their (partial) correlations vectorised, in
:mod:`~agemapper.stats.associations`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def pearson(x, y) -> float:
    """Pearson's r of two equally long samples; NaN where it is undefined (fewer than 3 pairs,
    or a sample without variance), never a warning.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)
