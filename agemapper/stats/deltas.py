"""Brain-age deltas and their age-bias correction.

delta = predicted age - chronological age is biased: regression to the mean makes it correlate
negatively with age. Two corrections, both fitted on data not used for training (validation)
and applied to held-out data (test):

- ``smith2019`` (Smith et al., NeuroImage 2019): regress delta on demeaned age (and age^2, ...)
  and subtract the fit: delta_corrected = delta - X(age) @ beta.
- ``linear`` (Cole; de Lange): fit predicted = a * age + b, then
  delta_corrected = (predicted - b) / a - age.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agemapper.stats.correlation import pearson

log = logging.getLogger(__name__)

METHODS = ("smith2019", "linear")
TERMS = ("age", "age2", "age3")


@dataclass(frozen=True)
class BiasCorrection:
    method: str
    terms: tuple[str, ...]
    age_mean: float
    age_scale: float
    coef: tuple[float, ...]

    def design(self, age: np.ndarray) -> np.ndarray:
        z = (np.asarray(age, float) - self.age_mean) / self.age_scale
        cols = [np.ones_like(z)]
        for term in self.terms:
            power = {"age": 1, "age2": 2, "age3": 3}[term]
            cols.append(z**power)
        return np.column_stack(cols)

    def coef_names(self) -> tuple[str, ...]:
        """What each coefficient multiplies: ``predicted = slope * age + intercept`` (linear);
        ``delta = intercept + age * z + age2 * z^2 ...`` with z the standardised age
        ``(age - age_mean) / age_scale`` (smith2019)."""
        return ("slope", "intercept") if self.method == "linear" else ("intercept", *self.terms)

    def apply(self, age, predicted) -> np.ndarray:
        age = np.asarray(age, float)
        predicted = np.asarray(predicted, float)
        if self.method == "linear":
            a, b = self.coef
            return (predicted - b) / a - age
        return (predicted - age) - self.design(age) @ np.asarray(self.coef)


def fit_bias_correction(age, predicted, method: str = "smith2019", terms=("age", "age2")):
    """Fit the correction on (age, predicted) pairs of the fitting split."""
    age = np.asarray(age, float)
    predicted = np.asarray(predicted, float)
    if method not in METHODS:
        raise ValueError(f"unknown bias correction {method!r}; expected one of {METHODS}")
    if len(age) < 3:
        raise ValueError(f"bias correction needs at least 3 subjects, got {len(age)}")
    if method == "linear":
        a, b = np.polyfit(age, predicted, 1)
        if abs(a) < 1e-6:
            raise ValueError("predicted age does not vary with age; cannot invert the fit")
        return BiasCorrection("linear", (), 0.0, 1.0, (float(a), float(b)))
    unknown = [t for t in terms if t not in TERMS]
    if unknown:
        raise ValueError(f"unknown bias-correction term(s) {unknown}; expected {TERMS}")
    scale = float(age.std()) or 1.0
    corr = BiasCorrection("smith2019", tuple(terms), float(age.mean()), scale, ())
    X = corr.design(age)
    beta, *_ = np.linalg.lstsq(X, predicted - age, rcond=None)
    return BiasCorrection("smith2019", tuple(terms), corr.age_mean, scale, tuple(map(float, beta)))


CORRECTION_COLUMNS = ["contrast", "sex", "method", "terms", "age_mean", "age_scale", "coef"]


def corrections_table(corrections: dict) -> pd.DataFrame:
    """The fitted corrections, one row per contrast and sex (to reapply them elsewhere)."""
    rows = [
        {
            "contrast": c,
            "sex": s,
            "method": k.method,
            "terms": " ".join(k.terms),
            "age_mean": k.age_mean,
            "age_scale": k.age_scale,
            "coef": " ".join(repr(float(x)) for x in k.coef),
        }
        for (c, s), k in corrections.items()
    ]
    return pd.DataFrame(rows, columns=CORRECTION_COLUMNS)


def read_corrections(table: pd.DataFrame) -> dict:
    """Inverse of :func:`corrections_table`."""
    out = {}
    for _, r in table.fillna("").iterrows():
        out[(r.contrast, r.sex)] = BiasCorrection(
            r.method,
            tuple(str(r.terms).split()),
            float(r.age_mean),
            float(r.age_scale),
            tuple(float(x) for x in str(r.coef).split()),
        )
    return out


def correct_deltas(
    predictions: pd.DataFrame,
    method: str = "smith2019",
    terms=("age", "age2"),
    fit_split: str = "validation",
    stored: dict | None = None,
    warn_under: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Deltas for every contrast and sex, corrected with a fit on ``fit_split``.

    ``predictions`` has columns contrast, sex, subject, split, half, age, predicted and
    replicate_* columns. With ``stored`` corrections (from :func:`read_corrections`) nothing is
    fitted: a new cohort is corrected exactly as the original run's test split was. A fit on
    fewer than ``warn_under`` subjects is logged as a warning (apply mode's calibration
    subjects). Returns
    (deltas, metrics, corrections): one row per subject and contrast (with two or more
    replicates, ``predicted_sd`` is the standard deviation of the replicates' predictions);
    one row per contrast, sex and split with MAE and correlations before and after correction
    and the correction's coefficients (``correction_<term>``, see ``coef_names``); the
    corrections used.
    """
    from agemapper.errors import ConfigError

    rows, metrics, used = [], [], {}
    for (contrast, sex), group in predictions.groupby(["contrast", "sex"], sort=False):
        fit = group[group.split == fit_split]
        if stored is not None:
            if (contrast, sex) not in stored:
                raise ConfigError(f"no stored bias correction for {contrast}/{sex}")
            corr = stored[(contrast, sex)]
        else:
            if warn_under and len(fit) < warn_under:
                log.warning(
                    "%s %s: bias correction fitted on %d %s subjects, fewer than %d: it is "
                    "uncertain",
                    contrast,
                    sex,
                    len(fit),
                    fit_split,
                    warn_under,
                )
            corr = fit_bias_correction(fit.age, fit.predicted, method, terms)
        used[(contrast, sex)] = corr
        out = group[["subject", "sex", "split", "half", "age", "predicted"]].copy()
        out["delta"] = out.predicted - out.age
        out["delta_corrected"] = corr.apply(out.age, out.predicted)
        out["predicted_corrected"] = out.age + out.delta_corrected
        out["contrast"] = contrast
        replicate_cols = [c for c in group.columns if c.startswith("replicate_")]
        if len(replicate_cols) >= 2:  # how far the replicate networks disagree, per subject
            out["predicted_sd"] = group[replicate_cols].std(axis=1, ddof=1)
        rows.append(out)
        for split, part in out.groupby("split", sort=False):
            reps = group.loc[part.index, replicate_cols]
            rep_mae = (reps.sub(part.age, axis=0)).abs().mean()
            metrics.append(
                {
                    "contrast": contrast,
                    "sex": sex,
                    "split": split,
                    "n": len(part),
                    "mae": float(part.delta.abs().mean()),
                    "r_predicted_age": pearson(part.predicted, part.age),
                    "r_delta_age": pearson(part.delta, part.age),
                    "mae_corrected": float(part.delta_corrected.abs().mean()),
                    "r_delta_corrected_age": pearson(part.delta_corrected, part.age),
                    "mae_replicate_mean": float(rep_mae.mean()) if len(rep_mae) else np.nan,
                    "mae_replicate_min": float(rep_mae.min()) if len(rep_mae) else np.nan,
                    "mae_replicate_max": float(rep_mae.max()) if len(rep_mae) else np.nan,
                    # each replicate network's own MAE (mae_replicate_1, _2, ...)
                    **{f"mae_{c}": float(v) for c, v in rep_mae.items()},
                    # predicting the fitting split's mean age for everyone
                    "mae_mean_age_baseline": float(
                        (part.age - (fit.age if len(fit) else part.age).mean()).abs().mean()
                    ),
                    "correction": corr.method,
                    **{
                        f"correction_{name}": value
                        for name, value in zip(corr.coef_names(), corr.coef, strict=True)
                    },
                }
            )
    columns = [
        "subject",
        "sex",
        "split",
        "half",
        "age",
        "predicted",
        "delta",
        "delta_corrected",
        "predicted_corrected",
        "contrast",
    ]
    if rows and all("predicted_sd" in r.columns for r in rows):
        columns.append("predicted_sd")
    deltas = pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)
    return deltas, pd.DataFrame(metrics), corrections_table(used)
