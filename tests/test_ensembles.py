import numpy as np
import pandas as pd
import pytest

from agemapper.stats import ensembles as E
from conftest import load_benchmark


def _predictions(n=400, seed=0, contrasts=("a", "b", "c", "d")):
    """Each contrast predicts age plus its own error; d is pure noise around the mean."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(45, 80, n)
    split = np.where(np.arange(n) < n // 2, "validation", "test")
    rows = []
    for k, c in enumerate(contrasts):
        pred = age + rng.normal(0, 3 + k, n) if c != "d" else 63 + rng.normal(0, 5, n)
        rows.append(
            pd.DataFrame(
                {
                    "contrast": c,
                    "subject": [str(i) for i in range(n)],
                    "sex": "male",
                    "split": split,
                    "half": "",
                    "age": age,
                    "predicted": pred,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _mae(table, split="test"):
    t = table[table.split == split]
    return (t.predicted - t.age).abs().groupby(t.contrast).mean()


def test_ensembles_beat_the_best_single_contrast_on_held_out_data():
    preds = _predictions()
    fitted = E.fit_all(preds, E.METHODS)
    assert [e.name for e in fitted] == ["ensemble_mean", "ensemble_linear", "ensemble_elastic_net"]
    out = E.apply(fitted, preds)
    single = _mae(preds).drop("d").min()
    ens = _mae(out)
    assert ens["ensemble_linear"] < single and ens["ensemble_elastic_net"] < single
    lin = next(e for e in fitted if e.method == "linear")
    assert abs(lin.weights[3]) < 0.05  # the useless contrast gets ~no weight
    assert lin.weights[0] > lin.weights[1] > lin.weights[2] > 0  # precise contrasts weigh more


def test_linear_recovers_exact_weights_and_nonnegative_constraint():
    rng = np.random.default_rng(1)
    X = rng.normal(60, 8, (200, 3))
    y = 2.0 + 0.5 * X[:, 0] + 0.6 * X[:, 1] - 0.1 * X[:, 2]
    e = E.fit("linear", X, y, ["a", "b", "c"], "f")
    assert np.allclose(e.weights, [0.5, 0.6, -0.1]) and e.intercept == pytest.approx(2.0)
    nn = E.fit("linear", X, y, ["a", "b", "c"], "f", nonnegative=True)
    assert (nn.weights >= 0).all() and nn.weights[2] == 0


def test_elastic_net_cross_validates_and_respects_nonnegativity():
    rng = np.random.default_rng(2)
    X = rng.normal(0, 1, (300, 6))
    y = 60 + 3 * X[:, 0] - 2 * X[:, 1] + rng.normal(0, 0.5, 300)
    e = E.fit("elastic_net", X, y, list("abcdef"), "m", folds=5)
    assert e.weights[0] == pytest.approx(3, abs=0.2) and e.weights[1] == pytest.approx(-2, abs=0.2)
    assert np.abs(e.weights[2:]).max() < 0.15 and "alpha" in e.details
    nn = E.fit("elastic_net", X, y, list("abcdef"), "m", nonnegative=True)
    assert (nn.weights >= 0).all()
    with pytest.raises(ValueError, match="unknown ensemble method"):
        E.fit("boosting", X, y, list("abcdef"), "m")


def test_weights_table_round_trip_reproduces_predictions():
    preds = _predictions(seed=3)
    fitted = E.fit_all(preds, E.METHODS)
    table = E.weights_table(fitted)
    again = E.from_weights_table(table)
    pd.testing.assert_frame_equal(E.apply(fitted, preds), E.apply(again, preds))


def _objective(Xs, y, w, b, alpha, l1_ratio):
    r = y - b - Xs @ w
    return r @ r / (2 * len(y)) + alpha * (l1_ratio * np.abs(w).sum() + (1 - l1_ratio) / 2 * w @ w)


@pytest.mark.parametrize("nonnegative", [False, True])
def test_elastic_net_reaches_the_optimum_on_correlated_predictions(nonnegative):
    from sklearn.linear_model import ElasticNet

    # benchmarks/ensembles.py's problem: 57 contrasts with errors shared by all, the last
    # three mostly the shared error (their best unconstrained weights are negative)
    X, age = load_benchmark("ensembles").make_problem(600, 57, seed=0)
    e = E.fit("elastic_net", X, age, [f"c{i}" for i in range(57)], "f", nonnegative=nonnegative)
    # the fit in the standardised units it is computed in
    mu, sd = X.mean(0), X.std(0)
    Xs, w = (X - mu) / sd, e.weights * sd
    b, alpha = e.intercept + mu @ e.weights, e.details["alpha"]
    optimum = ElasticNet(
        alpha=alpha, l1_ratio=0.5, positive=nonnegative, tol=1e-14, max_iter=10**6
    ).fit(Xs, age)
    best = _objective(Xs, age, optimum.coef_, optimum.intercept_, alpha, 0.5)
    ours = _objective(Xs, age, w, b, alpha, 0.5)
    assert ours - best < 1e-9 * best
    assert np.abs(w - optimum.coef_).max() < 1e-5
    # and, independently of scikit-learn, the optimality (KKT) conditions of the objective
    grad = Xs.T @ (age - b - Xs @ w) / len(age) - alpha * 0.5 * w  # minus the smooth part
    active = w != 0
    assert np.allclose(grad[active], alpha * 0.5 * np.sign(w[active]), atol=1e-6)
    if nonnegative:
        assert (w >= 0).all() and (grad[~active] <= alpha * 0.5 + 1e-6).all()
    else:
        assert (np.abs(grad[~active]) <= alpha * 0.5 + 1e-6).all()
    if nonnegative:  # the constraint binds: the shared-error contrasts get no weight
        assert (w[-3:] == 0).all() and active.sum() > 5
    else:  # they correct the shared error
        assert (w[-3:] < 0).all()


def test_elastic_net_folds_come_from_the_runs_seed():
    from agemapper.seeds import derive_seed

    preds = _predictions(n=300, seed=4)
    runs = {s: E.fit_all(preds, ["elastic_net"], seed=s)[0] for s in (0, 1)}
    again = E.fit_all(preds, ["elastic_net"], seed=0)[0]
    assert again.details == runs[0].details and np.array_equal(again.weights, runs[0].weights)
    assert runs[0].details["cv_mse"] != runs[1].details["cv_mse"]  # other folds
    wide = E._wide(preds[preds.split == "validation"], "abcd")
    ages = preds.drop_duplicates("subject").set_index("subject").age.loc[wide.index]
    direct = E.fit(
        "elastic_net", wide, ages, "abcd", "male", seed=derive_seed(1, "ensembles", "male")
    )
    assert direct.details == runs[1].details


def test_ensembles_of_each_replicate_give_the_ensemble_spread():
    preds = _predictions(seed=4)
    rng = np.random.default_rng(4)
    preds["replicate_1"] = preds.predicted + rng.normal(0, 1, len(preds))
    preds["replicate_2"] = 2 * preds.predicted - preds.replicate_1  # their mean is predicted
    fitted = E.fit_all(preds, ["linear"])
    out = E.apply(fitted, preds)
    assert list(out.columns[-2:]) == ["replicate_1", "replicate_2"]
    # the ensemble is linear, so the mean of the ensembles of each replicate is the ensemble
    assert np.allclose(out[["replicate_1", "replicate_2"]].mean(axis=1), out.predicted)
    one = fitted[0]
    sub = preds[preds.sex == one.sex].pivot_table(
        index="subject", columns="contrast", values="replicate_1"
    )[one.contrasts]
    expected = pd.Series(one.predict(sub.to_numpy()), index=sub.index)
    got = out.set_index("subject").replicate_1
    assert np.allclose(got.loc[expected.index], expected)
