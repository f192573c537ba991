"""Ensembles across contrasts: one brain age from the brain ages of several contrasts.

Each method is fitted per sex on the validation split (the replicate-mean predicted age of every
contrast as features, chronological age as target) and applied unchanged to the test split:

- ``mean``: the plain average of the contrasts' predicted ages;
- ``linear``: least squares with an intercept (non-negative weights selectable, by NNLS);
- ``elastic_net``: elastic-net regression on standardised predictions, penalty chosen by
  K-fold cross-validation on the validation split (folds shuffled with a seed derived from the
  run's ``training.seed`` and the sex), then refitted on all of it (scikit-learn's
  ``ElasticNetCV``; non-negative weights selectable, ``positive=True``).

An ensemble's predictions become one more "contrast" (``ensemble_<method>``) downstream: bias
correction, deltas and associations treat it like any other.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import nnls
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNetCV
from sklearn.model_selection import KFold

from agemapper.seeds import derive_seed

METHODS = ("mean", "linear", "elastic_net")
PREFIX = "ensemble_"
# The elastic net's penalty path (the hand-written version this replaced used the same grid)
# and its convergence: see _fit_elastic_net.
ALPHAS, EPS = 30, 1e-4
TOL, MAX_ITER = 1e-9, 100_000

log = logging.getLogger(__name__)


@dataclass
class Ensemble:
    method: str
    sex: str
    contrasts: list[str]
    weights: np.ndarray
    intercept: float
    details: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.method}"

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.intercept + np.asarray(X, float) @ self.weights


def _fit_elastic_net(X, y, nonnegative, l1_ratio, folds, seed):
    """scikit-learn's ``ElasticNetCV`` on standardised predictions, folds shuffled by ``seed``.

    It minimises (1/2n)|y - b - Xw|^2 + alpha (l1 |w|_1 + (1 - l1)/2 |w|^2) along a path of
    ``ALPHAS`` penalties from the smallest that zeroes every weight down to ``EPS`` times it,
    picks the one with the lowest K-fold mean squared error, and refits on all subjects.
    ``TOL`` is tight because scikit-learn scales its duality-gap criterion by |y - mean(y)|^2
    (ages: ~50 years^2 a subject), so its default of 1e-4 would allow a gap of ~5e-3 in the
    objective. Coordinates are visited in random order (seeded): on correlated predictions that
    converges ~20x sooner than cyclic order (docs/benchmarks.md) to the same optimum, which is
    unique for ``l1_ratio < 1`` (the objective is then strictly convex).
    """
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    Xs = (X - mu) / sd
    model = ElasticNetCV(
        l1_ratio=l1_ratio,
        eps=EPS,
        alphas=ALPHAS,
        cv=KFold(folds, shuffle=True, random_state=seed),
        positive=nonnegative,
        tol=TOL,
        max_iter=MAX_ITER,
        selection="random",
        random_state=seed,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(Xs, y)
    unconverged = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    if unconverged:  # said in the log, never silently (the weights are still a valid fit)
        log.warning(
            "elastic net: %d fit(s) on the penalty path stopped after %d iterations short of "
            "the tolerance (%s)",
            len(unconverged),
            MAX_ITER,
            str(unconverged[0].message).splitlines()[0],
        )
    weights = model.coef_ / sd
    intercept = float(model.intercept_) - mu @ weights
    best = int(np.flatnonzero(model.alphas_ == model.alpha_)[0])
    cv_mse = float(model.mse_path_[best].mean())
    return weights, intercept, {"alpha": float(model.alpha_), "cv_mse": cv_mse}


def fit(method, X, y, contrasts, sex, nonnegative=False, l1_ratio=0.5, folds=5, seed=0):
    """Fit one ensemble on a (subjects x contrasts) matrix of predicted ages.

    ``seed`` shuffles the elastic net's cross-validation folds.
    """
    X, y = np.asarray(X, float), np.asarray(y, float)
    if method == "mean":
        weights, intercept, details = np.full(X.shape[1], 1.0 / X.shape[1]), 0.0, {}
    elif method == "linear":
        A = np.column_stack([np.ones(len(y)), X])
        if nonnegative:
            mu_x, mu_y = X.mean(0), y.mean()
            weights, _ = nnls(X - mu_x, y - mu_y)
            intercept = mu_y - mu_x @ weights
        else:
            coef, *_ = np.linalg.lstsq(A, y, rcond=None)
            intercept, weights = coef[0], coef[1:]
        details = {}
    elif method == "elastic_net":
        folds = max(2, min(folds, len(y)))
        weights, intercept, details = _fit_elastic_net(X, y, nonnegative, l1_ratio, folds, seed)
    else:
        raise ValueError(f"unknown ensemble method {method!r}; expected one of {METHODS}")
    return Ensemble(method, sex, list(contrasts), np.asarray(weights), float(intercept), details)


def _wide(predictions: pd.DataFrame, contrasts, values: str = "predicted") -> pd.DataFrame:
    wide = predictions.pivot_table(index="subject", columns="contrast", values=values)
    return wide.reindex(columns=list(contrasts)).dropna()


def fit_all(
    predictions: pd.DataFrame,
    methods,
    nonnegative=False,
    l1_ratio=0.5,
    folds=5,
    fit_split="validation",
    seed=0,
    warn_under: int | None = None,
) -> list[Ensemble]:
    """Fit every method per sex on ``fit_split`` (subjects with all contrasts).

    ``seed`` is the run's base seed (``training.seed``); each sex's cross-validation folds
    are drawn with a seed derived from it. A fit on fewer than ``warn_under`` subjects is
    logged as a warning (apply mode's calibration subjects).
    """
    out = []
    contrasts = sorted(c for c in predictions.contrast.unique() if not c.startswith(PREFIX))
    if len(contrasts) < 2:
        return out
    for sex, part in predictions.groupby("sex", sort=True):
        fitting = part[part.split == fit_split]
        wide = _wide(fitting, contrasts)
        ages = fitting.drop_duplicates("subject").set_index("subject").age.loc[wide.index]
        if warn_under and len(ages) < warn_under:
            log.warning(
                "%s: ensembles fitted on %d %s subjects, fewer than %d: uncertain",
                sex,
                len(ages),
                fit_split,
                warn_under,
            )
        for method in methods:
            out.append(
                fit(
                    method,
                    wide.to_numpy(),
                    ages.to_numpy(),
                    contrasts,
                    sex,
                    nonnegative,
                    l1_ratio,
                    folds,
                    derive_seed(seed, "ensembles", sex),
                )
            )
    return out


def apply(ensembles: list[Ensemble], predictions: pd.DataFrame) -> pd.DataFrame:
    """Ensemble predictions in the same long format as the contrasts' (one row per subject).

    ``replicate_k`` columns, where the contrasts have them, are the ensemble applied to the
    k-th replicate network of every contrast: their spread is the ensemble's sensitivity to
    the networks' initialisation, as the contrasts' own replicate columns are theirs.
    """
    replicates = sorted(c for c in predictions.columns if c.startswith("replicate_"))
    rows = []
    for ens in ensembles:
        part = predictions[predictions.sex == ens.sex]
        if part.empty:
            continue
        wide = _wide(part, ens.contrasts)
        info = part.drop_duplicates("subject").set_index("subject").loc[wide.index]
        table = info[["sex", "split", "half", "age"]].reset_index()
        table.insert(0, "contrast", ens.name)
        table["predicted"] = ens.predict(wide.to_numpy())
        for rep in replicates:
            values = _wide(part, ens.contrasts, rep).reindex(wide.index)
            table[rep] = ens.predict(values.to_numpy())
        rows.append(table)
    columns = ["contrast", "subject", "sex", "split", "half", "age", "predicted", *replicates]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def weights_table(ensembles: list[Ensemble]) -> pd.DataFrame:
    """One row per ensemble, sex and contrast (plus the intercept), for reports and reuse."""
    rows = []
    for ens in ensembles:
        for c, w in zip(ens.contrasts, ens.weights, strict=True):
            rows.append({"ensemble": ens.name, "sex": ens.sex, "term": c, "weight": float(w)})
        rows.append(
            {"ensemble": ens.name, "sex": ens.sex, "term": "(intercept)", "weight": ens.intercept}
        )
    return pd.DataFrame(rows, columns=["ensemble", "sex", "term", "weight"])


def from_weights_table(table: pd.DataFrame) -> list[Ensemble]:
    """Rebuild fitted ensembles from :func:`weights_table` (apply mode)."""
    out = []
    for (name, sex), part in table.groupby(["ensemble", "sex"], sort=False):
        terms = part[part.term != "(intercept)"]
        intercept = float(part.loc[part.term == "(intercept)", "weight"].sum())
        out.append(
            Ensemble(
                name.removeprefix(PREFIX),
                sex,
                terms.term.tolist(),
                terms.weight.to_numpy(float),
                intercept,
            )
        )
    return out


def read_predictions(paths, may_be_empty=()) -> pd.DataFrame:
    """Concatenate prediction tables (per contrast and sex, or of ensembles).

    A table without a row, or with a predicted age that is not a finite number, is an error
    naming the file: a contrast and sex silently missing from the deltas is a wrong result.
    Tables in ``may_be_empty`` (the ensembles', when there are none) may have no row.
    """
    from agemapper.errors import InputDataError

    frames = []
    for path in paths:
        frame = pd.read_csv(path, sep="\t", dtype={"subject": str, "half": str})
        ages = pd.to_numeric(frame.get("predicted", pd.Series(dtype=float)), errors="coerce")
        if frame.empty and path not in may_be_empty:
            raise InputDataError("holds no predictions", path=path)
        bad = frame.loc[~np.isfinite(ages.to_numpy(dtype=float)), "subject"]
        if len(bad):
            raise InputDataError(
                f"{len(bad)} predicted ages are not finite numbers (first: subject {bad.iloc[0]})",
                path=path,
            )
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["half"] = table["half"].fillna("")
    return table
