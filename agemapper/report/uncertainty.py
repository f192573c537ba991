"""Does a larger spread of the replicate networks' predictions mean a larger error?

``deltas/all.csv`` carries ``predicted_sd``: per subject, the standard deviation of the
replicate networks' predictions (for an ensemble, of the ensemble applied to each replicate of
every contrast). A useful per-subject uncertainty grows with the error. On the test split, per
contrast and sex, this module ranks subjects by that spread and compares it with the absolute
corrected delta |delta_corrected| (the error left once the age bias is removed): Spearman's
rank correlation (95% interval from Fisher's z with Fieller's variance 1.06 / (n - 3)), and
the mean absolute error in each fifth of the spread.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

BINS = 5  # fifths of the spread, per contrast and sex

COLUMNS = [
    "contrast",
    "sex",
    "n",
    "sd_median",
    "spearman_rho",
    "rho_low",
    "rho_high",
    "p",
    "mae_lowest_fifth",
    "mae_highest_fifth",
]


def calibration(deltas: pd.DataFrame, split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per contrast and sex: Spearman rho of spread vs |corrected delta| with a 95% interval
    (Fisher z) and the MAE in the lowest and highest fifth of spread; per contrast, sex and
    fifth of spread: n, mean spread, MAE). Empty tables when there is no ``predicted_sd``."""
    bins_columns = ["contrast", "sex", "fifth", "n", "sd_mean", "mae"]
    if "predicted_sd" not in deltas.columns:
        return pd.DataFrame(columns=COLUMNS), pd.DataFrame(columns=bins_columns)
    data = deltas[(deltas.split == split) & deltas.predicted_sd.notna()]
    rows, bins = [], []
    for (contrast, sex), g in data.groupby(["contrast", "sex"], sort=False):
        sd = g.predicted_sd.to_numpy(float)
        err = g.delta_corrected.abs().to_numpy(float)
        n = len(g)
        if n < 5 or np.ptp(sd) == 0:
            continue
        rho, p = stats.spearmanr(sd, err)
        half = 1.96 * np.sqrt(1.06 / max(n - 3, 1))  # Fieller et al. (1957) for Spearman
        z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
        fifth = np.minimum((stats.rankdata(sd, method="ordinal") - 1) * BINS // n, BINS - 1)
        per = pd.DataFrame({"fifth": fifth + 1, "sd": sd, "err": err}).groupby("fifth")
        summary = per.agg(n=("err", "size"), sd_mean=("sd", "mean"), mae=("err", "mean"))
        for k, rec in summary.iterrows():
            bins.append({"contrast": contrast, "sex": sex, "fifth": int(k), **rec.to_dict()})
        rows.append(
            {
                "contrast": contrast,
                "sex": sex,
                "n": n,
                "sd_median": float(np.median(sd)),
                "spearman_rho": float(rho),
                "rho_low": float(np.tanh(z - half)),
                "rho_high": float(np.tanh(z + half)),
                "p": float(p),
                "mae_lowest_fifth": float(summary.mae.iloc[0]),
                "mae_highest_fifth": float(summary.mae.iloc[-1]),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(bins, columns=bins_columns)
