import re

import numpy as np
import pandas as pd
import pytest

from agemapper.stats.deltas import correct_deltas, fit_bias_correction


def _cohort(n, seed, dilution=0.6):
    rng = np.random.default_rng(seed)
    age = rng.uniform(45, 82, n)
    brain = age + rng.normal(0, 3, n)  # true brain age
    # regression to the mean: predictions shrink towards 64
    predicted = 64 + dilution * (brain - 64) + rng.normal(0, 2, n)
    return age, predicted, brain - age


@pytest.mark.parametrize("method", ["smith2019", "linear"])
def test_corrected_deltas_are_unbiased_on_held_out_data(method):
    age_v, pred_v, _ = _cohort(2000, 0)
    age_t, pred_t, true_t = _cohort(2000, 1)
    raw = pred_t - age_t
    assert np.corrcoef(raw, age_t)[0, 1] < -0.5  # the bias
    fit = fit_bias_correction(age_v, pred_v, method)
    corrected = fit.apply(age_t, pred_t)
    assert abs(np.corrcoef(corrected, age_t)[0, 1]) < 0.05
    assert np.corrcoef(corrected, true_t)[0, 1] > 0.5


def test_smith_terms_and_unknown_method():
    age, pred, _ = _cohort(500, 2)
    fit = fit_bias_correction(age, pred, "smith2019", ("age",))
    assert len(fit.coef) == 2
    with pytest.raises(ValueError, match="unknown bias correction"):
        fit_bias_correction(age, pred, "cole")
    with pytest.raises(ValueError, match="term"):
        fit_bias_correction(age, pred, "smith2019", ("age5",))


def test_correct_deltas_table_and_metrics():
    rows = []
    for split, seed in (("validation", 0), ("test", 1)):
        age, pred, _ = _cohort(300, seed)
        rows.append(
            pd.DataFrame(
                {
                    "contrast": "swi",
                    "sex": "male",
                    "subject": [f"{split}{i}" for i in range(300)],
                    "split": split,
                    "half": "",
                    "age": age,
                    "predicted": pred,
                    "replicate_1": pred + 1,
                    "replicate_2": pred - 1,
                }
            )
        )
    deltas, metrics, _ = correct_deltas(pd.concat(rows, ignore_index=True))
    assert {
        "subject",
        "sex",
        "split",
        "age",
        "predicted",
        "delta",
        "delta_corrected",
        "contrast",
    } <= set(deltas.columns)
    test = metrics[metrics.split == "test"].iloc[0]
    assert test.r_delta_age < -0.3 and abs(test.r_delta_corrected_age) < 0.15
    assert test.mae_replicate_min == pytest.approx(test.mae_replicate_max, abs=0.2)
    singles = [test[c] for c in metrics.columns if re.fullmatch(r"mae_replicate_\d+", c)]
    assert len(singles) >= 2 and min(singles) == test.mae_replicate_min
