import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests

from agemapper import associations as A
from agemapper.nidps import labels, prepare


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.uniform(45, 80, n),
            "site": rng.choice([11025, 11026, 11027], n),
            "head_size": rng.normal(1, 0.1, n),
            "motion": rng.lognormal(-2, 0.3, n),
        }
    )
    D = rng.standard_normal((n, 3))
    D[:, 0] += 0.05 * frame.age + 2 * frame.motion
    Y = rng.standard_normal((n, 5))
    Y[:, 0] += 0.5 * D[:, 0] + frame.head_size
    Y[:, 1] += 0.3 * D[:, 2]
    Y[:, 3] = Y[:, 3] * 1e3 + 5e4  # badly scaled column
    Y[rng.random(Y.shape) < 0.25] = np.nan  # 25% missing at random, per column
    return frame, D, Y


def test_r_and_p_match_statsmodels_per_pair_with_missing_values():
    frame, D, Y = _data()
    cols = ["age", "site", "head_size", "motion"]
    Z, names = A.design_matrix(frame, cols, categorical=["site"])
    res = A.partial_correlations(D, Y, Z)
    p, nl = A.p_values(res["t"], res["df"])
    for c in range(D.shape[1]):
        for j in range(Y.shape[1]):
            m = ~np.isnan(Y[:, j])
            f = frame[m]
            X = np.column_stack(
                [D[m, c], f.age, f.age**2, f.site == 11026, f.site == 11027, f.head_size, f.motion]
            )
            fit = sm.OLS(Y[m, j], sm.add_constant(X.astype(float))).fit()
            assert res["n"][c, j] == m.sum()
            assert res["df"][c, j] == fit.df_resid
            assert res["t"][c, j] == pytest.approx(fit.tvalues[1], rel=1e-8)
            assert p[c, j] == pytest.approx(fit.pvalues[1], rel=1e-8)
            # r is the partial correlation of the residuals
            rd = sm.OLS(D[m, c], sm.add_constant(X[:, 1:].astype(float))).fit().resid
            ry = sm.OLS(Y[m, j], sm.add_constant(X[:, 1:].astype(float))).fit().resid
            assert res["r"][c, j] == pytest.approx(np.corrcoef(rd, ry)[0, 1], rel=1e-8)
            assert nl[c, j] == pytest.approx(-np.log10(fit.pvalues[1]), rel=1e-8)


def test_tiny_p_values_keep_their_log():
    from scipy import stats

    t = np.array([4.0, 12.0, 25.0, 31.0])
    df = np.array([60.0, 500.0, 4000.0, 4000.0])
    # the tail formula agrees with scipy where scipy's value is still representable
    assert np.allclose(A._t_logsf_tail(t, df), stats.t.logsf(t, df), rtol=1e-10)
    p, nl = A.p_values(np.array([60.0, 200.0]), np.array([4000.0, 4000.0]))
    assert np.isfinite(nl).all() and 300 < nl[0] < nl[1]


def test_multiple_comparison_corrections_match_statsmodels():
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(0, 1, 200), rng.uniform(0, 1e-4, 20), [np.nan]])
    q = A.fdr_bh(p)
    ok = ~np.isnan(p)
    assert np.allclose(q[ok], multipletests(p[ok], method="fdr_bh")[1])
    assert np.allclose(A.bonferroni(p)[ok], multipletests(p[ok], method="bonferroni")[1])
    assert np.isnan(q[-1])


def test_rank_deficient_confounds_in_a_subset():
    frame, D, Y = _data(200)
    Y[frame.site == 11027, 2] = np.nan  # a site missing entirely for one nIDP
    Z, _ = A.design_matrix(frame, ["age", "site"], categorical=["site"])
    res = A.partial_correlations(D, Y, Z)
    m = ~np.isnan(Y[:, 2])
    f = frame[m]
    X = np.column_stack([D[m, 0], f.age, f.age**2, f.site == 11026]).astype(float)
    fit = sm.OLS(Y[m, 2], sm.add_constant(X)).fit()
    assert res["t"][0, 2] == pytest.approx(fit.tvalues[1], rel=1e-8)


def test_associate_end_to_end_groups_and_significance():
    rng = np.random.default_rng(3)
    n = 300
    subjects = [str(1000000 + i) for i in range(n)]
    sex = rng.choice(["female", "male"], n)
    age = rng.uniform(45, 80, n)
    rows = []
    for c in ("T1", "swi"):
        delta = rng.standard_normal(n)
        rows.append(
            pd.DataFrame(
                {
                    "subject": subjects,
                    "sex": sex,
                    "split": "test",
                    "half": "A",
                    "age": age,
                    "contrast": c,
                    "delta_corrected": delta,
                }
            )
        )
    deltas = pd.concat(rows, ignore_index=True)
    t1 = deltas[deltas.contrast == "T1"].delta_corrected.to_numpy()
    nidps = pd.DataFrame(
        {"4080-2.0": 0.6 * t1 + rng.standard_normal(n), "30000-2.0": rng.standard_normal(n)},
        index=subjects,
    )
    confounds = pd.DataFrame({"site": rng.choice([1, 2], n)}, index=subjects)
    table = A.associate(
        deltas,
        nidps,
        confounds,
        ["site"],
        ["site"],
        groups=["female", "male", "pooled"],
        min_subjects=20,
    )
    assert len(table) == 3 * 2 * 2
    table = A.add_significance(table)
    top = table.iloc[0]
    assert (top.contrast, top.nidp, top.sex) == ("T1", "4080-2.0", "pooled")
    assert top.significant_bonferroni
    assert table.p_fdr.min() < 1e-10
    assert not table[(table.contrast == "swi")].significant_fdr.any()


def test_categorical_fields_are_binarised_with_unambiguous_names():
    table = pd.DataFrame(
        {
            "20116-2.0": [0, 1, 2, 2, -3, np.nan] * 20,
            "21001-2.0": np.arange(120.0),
            "1234-2.0": ["a"] * 120,
            "50-2.0": [1.0] * 120,
            "4080-2.0": [1.0, np.nan] * 60,
        },
        index=[str(i) for i in range(120)],
    )
    matrix, report = prepare(table, min_subjects=61)
    assert {"20116-2.0=0", "20116-2.0=1", "20116-2.0=2", "21001-2.0"} == set(matrix.columns)
    ind = matrix["20116-2.0=2"]
    assert ind.isna().sum() == 40  # missing and "prefer not to answer" (-3)
    reasons = dict(zip(report.nidp, report.reason, strict=True))
    assert reasons["1234-2.0"] == "not numeric" and reasons["50-2.0"] == "constant"
    assert reasons["4080-2.0"].startswith("only 60 subjects")


def test_labels_come_from_funpack_tables():
    lab = labels(["20116-2.0=2", "21001-2.0", "25781-2.0", "my_score"]).set_index("nidp")
    assert lab.loc["21001-2.0", "title"] == "Body mass index (BMI)"
    assert lab.loc["21001-2.0", "category"] == "physical measures - general"
    assert lab.loc["20116-2.0=2", "title"] == "Smoking status = 2"
    assert lab.loc["20116-2.0=2", "category"] == "lifestyle and environment - tobacco"
    assert lab.loc["25781-2.0", "category"] == "brain IDPs"
    assert lab.loc["my_score", "title"] == ""
