"""Benchmark: the elastic-net ensemble, hand-written coordinate descent against scikit-learn.

    python benchmarks/ensembles.py            # 57 contrasts x 5,000 subjects
    python benchmarks/ensembles.py --small    # smoke run, seconds

Generates correlated brain-age predictions (each contrast = age + an error shared by all
contrasts + an error of its own, standard deviations 1 and 1-3 years; the last three contrasts
see mostly the shared error, so that their best weights are negative), then fits the
elastic-net ensemble (l1_ratio 0.5, 5-fold cross-validation over 30 penalties) in one run with

(a) the hand-written implementation this package used until it switched to scikit-learn (kept
    here verbatim as the baseline: pure-Python coordinate descent, at most 2,000 sweeps);
(b) ``agemapper.stats.ensembles.fit("elastic_net", ...)`` (scikit-learn's ``ElasticNetCV``).

For each it prints the fit time, the chosen penalty, the objective at that penalty beside its
optimum (scikit-learn's ``ElasticNet`` at tolerance 1e-14), the largest weight error, and the
MAE of the ensemble on an independent sample of the same size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this repository's agemapper

import numpy as np  # noqa: E402
from sklearn.linear_model import ElasticNet  # noqa: E402

from agemapper.stats import ensembles  # noqa: E402

L1_RATIO, FOLDS = 0.5, 5


# ---------------------------------------------------------------- baseline (the replaced code)


def _elastic_net(X, y, alpha, l1_ratio, nonnegative, iters=2000, tol=1e-8):
    """Coordinate descent for (1/2n)|y - Xw|^2 + alpha (l1 |w|_1 + (1 - l1)/2 |w|^2)."""
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


def baseline_fit(X, y, nonnegative, l1_ratio, folds, seed):
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
    return weights, intercept, float(alphas[best])


# ---------------------------------------------------------------- problem and scoring


def make_problem(n, p, seed):
    """``n`` subjects' predictions by ``p`` contrasts: each predicts age plus an error shared by
    all and one of its own; the last three see mostly the shared error (their best
    unconstrained weights are negative). tests/test_ensembles.py fits the same problem."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(45, 82, n)
    shared = rng.normal(0, 1, n)
    X = age[:, None] + shared[:, None] + rng.normal(0, 1, (n, p)) * rng.uniform(1, 3, p)
    X[:, -3:] = 63 + 4 * shared[:, None] + rng.normal(0, 1, (n, 3))
    return X, age


def objective(X, y, weights, intercept, alpha):
    """The elastic-net objective in the standardised units both implementations minimise."""
    mu, sd = X.mean(0), X.std(0)
    Xs, w = (X - mu) / sd, weights * sd
    r = y - (intercept + mu @ weights) - Xs @ w
    return r @ r / (2 * len(y)) + alpha * (L1_RATIO * np.abs(w).sum() + (1 - L1_RATIO) / 2 * w @ w)


def optimum(X, y, alpha, nonnegative):
    mu, sd = X.mean(0), X.std(0)
    model = ElasticNet(
        alpha=alpha, l1_ratio=L1_RATIO, positive=nonnegative, tol=1e-14, max_iter=10**7
    ).fit((X - mu) / sd, y)
    weights = model.coef_ / sd
    return weights, model.intercept_ - mu @ weights


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="smoke run (seconds)")
    parser.add_argument("--contrasts", type=int, default=57)
    parser.add_argument("--subjects", type=int, default=5_000)
    parser.add_argument("--nonnegative", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.small:
        args.contrasts, args.subjects = 8, 300

    X, y = make_problem(args.subjects, args.contrasts, args.seed)
    X_new, y_new = make_problem(args.subjects, args.contrasts, args.seed + 1)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(
        f"problem: {args.contrasts} contrasts x {args.subjects} subjects, correlated predictions, "
        f"l1_ratio {L1_RATIO}, {FOLDS} folds x 30 penalties, "
        f"{'non-negative' if args.nonnegative else 'signed'} weights",
        flush=True,
    )
    results = {}
    start = time.perf_counter()
    w, b, alpha = baseline_fit(X, y, args.nonnegative, L1_RATIO, FOLDS, args.seed)
    results["hand-written (baseline)"] = (time.perf_counter() - start, w, b, alpha)
    start = time.perf_counter()
    fitted = ensembles.fit(
        "elastic_net",
        X,
        y,
        [f"c{i}" for i in range(args.contrasts)],
        "female",
        nonnegative=args.nonnegative,
        l1_ratio=L1_RATIO,
        folds=FOLDS,
        seed=args.seed,
    )
    results["scikit-learn (ours)"] = (
        time.perf_counter() - start,
        fitted.weights,
        fitted.intercept,
        fitted.details["alpha"],
    )

    width = 24
    print()
    print(
        f"{'':{width}} {'fit time':>10} {'alpha':>9} {'objective':>11} {'optimum':>11} "
        f"{'excess':>9} {'max |w - w*|':>13} {'new-sample MAE':>15}"
    )
    out = {}
    for name, (seconds, w, b, alpha) in results.items():
        w_opt, b_opt = optimum(X, y, alpha, args.nonnegative)
        obj, best = objective(X, y, w, b, alpha), objective(X, y, w_opt, b_opt, alpha)
        mae = float(np.abs(b + X_new @ w - y_new).mean())
        err = float(np.abs(w - w_opt).max())
        print(
            f"{name:{width}} {seconds:>8.2f} s {alpha:>9.4f} {obj:>11.6f} {best:>11.6f} "
            f"{obj - best:>9.1e} {err:>13.1e} {mae:>12.3f} y"
        )
        out[name] = {"seconds": seconds, "alpha": alpha, "excess": obj - best, "max_w_error": err}
    speedup = results["hand-written (baseline)"][0] / results["scikit-learn (ours)"][0]
    print(f"{'speed-up':{width}} {speedup:>8.0f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    out["speedup"] = speedup
    return out


if __name__ == "__main__":
    main()
