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
    # the spread of the replicates, per subject: SD of (pred + 1, pred - 1) = sqrt(2)
    assert deltas.columns[-1] == "predicted_sd"
    assert np.allclose(deltas.predicted_sd, np.sqrt(2))
    # the correction's coefficients, one labelled column each
    assert "correction_coef" not in metrics.columns
    fitted = metrics[["correction_intercept", "correction_age", "correction_age2"]]
    assert fitted.notna().all().all() and (fitted.nunique() == 1).all()
    _, linear, _ = correct_deltas(pd.concat(rows, ignore_index=True), method="linear")
    assert {"correction_slope", "correction_intercept"} <= set(linear.columns)
    assert 0 < linear.correction_slope.iloc[0] < 1  # regression to the mean
    single = pd.concat(rows, ignore_index=True).drop(columns="replicate_2")
    assert "predicted_sd" not in correct_deltas(single)[0].columns  # one replicate: no spread


def test_missing_or_non_finite_predictions_are_errors(tmp_path):
    import pytest

    from agemapper.errors import InputDataError
    from agemapper.stats.ensembles import read_predictions

    columns = "contrast\tsubject\tsex\tsplit\thalf\tage\tpredicted\n"
    good = tmp_path / "good.tsv"
    good.write_text(columns + "vbm\t1\tfemale\ttest\tA\t60\t61.5\n")
    empty = tmp_path / "empty.tsv"
    empty.write_text(columns)
    nan = tmp_path / "nan.tsv"
    nan.write_text(
        columns + "vbm\t1\tfemale\ttest\tA\t60\t61.5\nvbm\t2\tfemale\ttest\tA\t60\tnan\n"
    )
    assert len(read_predictions([good])) == 1
    with pytest.raises(InputDataError, match=r"empty\.tsv: holds no predictions"):
        read_predictions([good, empty])
    assert len(read_predictions([good, empty], may_be_empty=[empty])) == 1
    with pytest.raises(InputDataError, match=r"1 predicted ages are not finite .*subject 2"):
        read_predictions([nan])


def test_pearson_is_scipys_r_and_nan_where_undefined():
    import warnings

    from agemapper.stats.correlation import pearson

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an undefined r is NaN, not a warning
        assert np.isnan(pearson(x, np.full(50, 0.1)))
        assert np.isnan(pearson([1.0, 2.0], [3.0, 5.0]))


def test_a_fit_on_few_calibration_subjects_is_a_warning(caplog):
    age, pred, _ = _cohort(40, 0)
    table = pd.DataFrame(
        {
            "contrast": "swi",
            "sex": "female",
            "subject": [str(i) for i in range(40)],
            "split": "validation",
            "half": "",
            "age": age,
            "predicted": pred,
        }
    )
    correct_deltas(table, warn_under=100)
    assert "swi female: bias correction fitted on 40 validation subjects, fewer than 100" in (
        caplog.text
    )
    caplog.clear()
    correct_deltas(table)  # a study run's validation split: no such warning
    assert "fewer than" not in caplog.text
