import numpy as np
import pandas as pd
import pytest

from agemapper.stats import ensembles as E


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
