"""Ensembles across contrasts: one brain age from the brain ages of several contrasts.

Each method is fitted per sex on the validation split (the replicate-mean predicted age of every
contrast as features, chronological age as target) and applied unchanged to the test split:

- ``mean``: the plain average of the contrasts' predicted ages;
- ``linear``: least squares with an intercept (non-negative weights selectable, by NNLS);
- ``elastic_net``: elastic-net regression on standardised predictions, penalty chosen by
  K-fold cross-validation on the validation split, then refitted on all of it (coordinate
  descent; non-negative weights selectable).

An ensemble's predictions become one more "contrast" (``ensemble_<method>``) downstream: bias
correction, deltas and associations treat it like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import nnls

METHODS = ("mean", "linear", "elastic_net")
PREFIX = "ensemble_"


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


def _elastic_net(X, y, alpha, l1_ratio, nonnegative, iters=2000, tol=1e-8):
    """Coordinate descent for (1/2n)|y - Xw|^2 + alpha (l1 |w|_1 + (1 - l1)/2 |w|^2).

    X and y are centred (no intercept here); columns of X are standardised.
    """
    n, p = X.shape
    w = np.zeros(p)
    col_sq = (X**2).sum(axis=0) / n
    r = y.copy()
    for _ in range(iters):
        change = 0.0
        for j in range(p):
            old = w[j]
            rho = X[:, j] @ r / n + col_sq[j] * old
            z = np.sign(rho) * max(abs(rho) - alpha * l1_ratio, 0.0)
            new = z / (col_sq[j] + alpha * (1 - l1_ratio))
            if nonnegative:
                new = max(new, 0.0)
            if new != old:
                r -= X[:, j] * (new - old)
                w[j] = new
                change = max(change, abs(new - old))
        if change < tol:
            break
    return w


def _fit_elastic_net(X, y, nonnegative, l1_ratio, folds, seed):
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    Xs = (X - mu) / sd
    yc = y - y.mean()
    alpha_max = np.abs(Xs.T @ yc).max() / (len(y) * max(l1_ratio, 1e-3))
    alphas = alpha_max * np.logspace(0, -4, 30)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(y)) % folds
    cv = []
    for alpha in alphas:
        err = 0.0
        for k in range(folds):
            tr, te = fold != k, fold == k
            m, s = Xs[tr].mean(0), Xs[tr].std(0)
            s = np.where(s > 0, s, 1.0)
            w = _elastic_net((Xs[tr] - m) / s, y[tr] - y[tr].mean(), alpha, l1_ratio, nonnegative)
            pred = y[tr].mean() + ((Xs[te] - m) / s) @ w
            err += ((pred - y[te]) ** 2).sum()
        cv.append(err / len(y))
    best = int(np.argmin(cv))
    w = _elastic_net(Xs, yc, alphas[best], l1_ratio, nonnegative)
    weights = w / sd
    intercept = y.mean() - mu @ weights
    return weights, intercept, {"alpha": float(alphas[best]), "cv_mse": float(cv[best])}


def fit(method, X, y, contrasts, sex, nonnegative=False, l1_ratio=0.5, folds=5, seed=0):
    """Fit one ensemble on a (subjects x contrasts) matrix of predicted ages."""
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
) -> list[Ensemble]:
    """Fit every method per sex on ``fit_split`` (subjects with all contrasts)."""
    out = []
    contrasts = sorted(c for c in predictions.contrast.unique() if not c.startswith(PREFIX))
    if len(contrasts) < 2:
        return out
    for sex, part in predictions.groupby("sex", sort=True):
        fitting = part[part.split == fit_split]
        wide = _wide(fitting, contrasts)
        ages = fitting.drop_duplicates("subject").set_index("subject").age.loc[wide.index]
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


def read_predictions(paths) -> pd.DataFrame:
    """Concatenate prediction tables (per contrast and sex, or of ensembles)."""
    frames = [pd.read_csv(p, sep="\t", dtype={"subject": str, "half": str}) for p in paths]
    table = pd.concat(frames, ignore_index=True)
    table["half"] = table["half"].fillna("")
    return table
