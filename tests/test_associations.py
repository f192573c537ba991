import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests

from agemapper.stats import associations as A
from agemapper.stats.nidps import labels, prepare


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


def _sm_pair(frame, d, y):
    """statsmodels reference for one pair: t, df, p of d in y ~ d + confounds, and partial r.

    y and the confounds are centred first (the same model, as it has an intercept): on a raw
    date-like column (mean 7e8, spread 1e-3) statsmodels itself loses about 11 digits.
    """
    m = ~np.isnan(y)
    f = frame[m]
    X = np.column_stack(
        [f.age, f.age**2, f.site == 11026, f.site == 11027, f.head_size, f.motion]
    ).astype(float)
    X = X - X.mean(axis=0)
    y = y - np.nanmean(y)
    fit = sm.OLS(y[m], sm.add_constant(np.column_stack([d[m], X]))).fit()
    rd = sm.OLS(d[m], sm.add_constant(X)).fit().resid
    ry = sm.OLS(y[m], sm.add_constant(X)).fit().resid
    return fit, np.corrcoef(rd, ry)[0, 1]


def test_sampled_pairs_match_statsmodels_with_shared_patterns_rows_and_chunks():
    """Many nIDPs, some sharing a missingness pattern (like binarised levels), read through
    ``rows`` from a larger table, in chunks: r, t, df, p agree with statsmodels to 1e-8."""
    rng = np.random.default_rng(7)
    frame, D, _ = _data(n=300, seed=7)
    N, J = 420, 40
    big = rng.standard_normal((N, J))
    rows = rng.permutation(N)[:300]  # this group's subjects, scattered in the larger table
    big[rows, :5] += 0.4 * D[:, [0]]
    big[:, 5] = big[:, 5] * 1e-3 + 7e8  # a date-like column: huge mean, small spread
    miss = rng.random((N, J)) < rng.uniform(0, 0.5, J)
    miss[:, 10:16] = miss[:, [10]]  # six columns with one pattern (one categorical field)
    miss[:, 20:23] = False  # complete columns share the all-present pattern
    big[miss] = np.nan
    big[:, 12] = np.where(miss[:, 12], np.nan, (big[:, 12] > 0).astype(float))  # an indicator
    Y = np.asfortranarray(big)
    Z, _ = A.design_matrix(frame, ["age", "site", "head_size", "motion"], categorical=["site"])
    res = A.partial_correlations(D, Y, Z, rows=rows, chunk=7)
    p, nl = A.p_values(res["t"], res["df"])
    pairs = [(c, j) for c in range(D.shape[1]) for j in range(J)]
    sample = [pairs[i] for i in rng.choice(len(pairs), 25, replace=False)]
    for c, j in sample + [(0, 5), (1, 11), (2, 12), (0, 20), (1, 21)]:
        fit, r = _sm_pair(frame, D[:, c], Y[rows, j])
        assert res["n"][c, j] == fit.nobs
        assert res["df"][c, j] == fit.df_resid
        assert res["t"][c, j] == pytest.approx(fit.tvalues[1], rel=1e-8)
        assert p[c, j] == pytest.approx(fit.pvalues[1], rel=1e-8)
        assert res["r"][c, j] == pytest.approx(r, rel=1e-8)
        assert nl[c, j] == pytest.approx(-np.log10(fit.pvalues[1]), rel=1e-8)
    # the same numbers without rows (a copied subset) and with one chunk
    again = A.partial_correlations(D, Y[rows], Z)
    for key in ("r", "t", "df", "n"):
        assert np.allclose(again[key], res[key], rtol=1e-12, equal_nan=True)


def test_missingness_patterns_group_identical_columns():
    M = np.array([[1, 0, 1, 1], [1, 1, 1, 0], [1, 0, 1, 1]], dtype=bool)
    first, inverse = A.missingness_patterns(M)
    assert len(first) == 2 and inverse[0] == inverse[2] != inverse[1]
    assert (M[first[inverse]] == M).all()


def test_whiten_pseudo_inverse_with_and_without_full_rank():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 4))
    full = X.T @ X
    X[:, 3] = X[:, 0] + X[:, 1]  # collinear: rank 3
    deficient = X.T @ X
    W, rank = A.whiten(np.stack([full, deficient]))
    assert list(rank) == [4, 3]
    assert np.allclose(W[0].T @ W[0], np.linalg.inv(full))
    assert np.allclose(W[1].T @ W[1], np.linalg.pinv(deficient, rcond=1e-10))
    # each matrix is judged alone: the same result whatever else is in the stack
    alone, _ = A.whiten(full[None])
    assert np.array_equal(alone[0], W[0])


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
    # by hand: 3 tests (NaN is not one); BH ranks 0.01 < 0.03 < 0.04 -> 0.03, 0.045, 0.04, then
    # the running minimum from the top
    small = np.array([0.01, 0.04, 0.03, np.nan])
    assert np.allclose(A.bonferroni(small), [0.03, 0.12, 0.09, np.nan], equal_nan=True)
    assert np.allclose(A.fdr_bh(small), [0.03, 0.04, 0.04, np.nan], equal_nan=True)
    assert np.isnan(A.fdr_bh(np.array([np.nan, np.nan]))).all() and A.bonferroni([]).size == 0


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
    assert lab.loc["20116-2.0=2", "title"] == "Smoking status: Current"  # coding 90
    assert lab.loc["20116-2.0=2", "category"] == "lifestyle and environment - tobacco"
    assert lab.loc["25781-2.0", "category"] == "brain IDPs"
    assert lab.loc["my_score", "title"] == ""


def _tests(rows):
    """An associate-like table from (contrast, sex, nidp, n, r, df) rows; t from r."""
    t = pd.DataFrame(rows, columns=["contrast", "sex", "nidp", "n", "r", "df"])
    t["t"] = t.r * np.sqrt(t["df"] / (1 - t.r**2))
    return t[["contrast", "sex", "nidp", "n", "r", "t", "df"]]


def test_replication_rule_sign_and_correction_over_the_discoveries():
    null = [("T1", "female", f"{100 + i}-2.0", 500, 0.0, 490) for i in range(200)]
    disc = _tests(
        [
            ("T1", "female", "1-2.0", 500, 0.30, 490),  # replicates
            ("T1", "female", "2-2.0", 500, -0.30, 490),  # flips sign in B
            ("T1", "female", "3-2.0", 500, 0.30, 490),  # weak in B
            ("T1", "female", "4-2.0", 500, 0.30, 490),  # absent from B
            *null,
        ]
    )
    rep = _tests(
        [
            ("T1", "female", "1-2.0", 480, 0.25, 470),
            ("T1", "female", "2-2.0", 480, 0.25, 470),
            ("T1", "female", "3-2.0", 480, 0.10, 470),  # p_B ~ 0.03: < alpha, not < alpha / 4
            *null,
        ]
    )
    out = A.discover_and_replicate(disc, rep, alpha=0.05, significance="bonferroni")
    assert len(out) == len(disc) and list(out.nidp[:4]) == ["1-2.0", "2-2.0", "3-2.0", "4-2.0"]
    top = out.set_index("nidp")
    assert top.significant_bonferroni[["1-2.0", "2-2.0", "3-2.0", "4-2.0"]].all()
    assert top.loc["3-2.0", "p_B"] < 0.05
    # carried: 4 discoveries, so p_B is multiplied by 4 (the absent one counts, with p = 1)
    assert "p_B_corrected" not in out.columns and "p_B_fdr" not in out.columns
    assert top.loc["1-2.0", "p_B_bonferroni"] == pytest.approx(4 * top.loc["1-2.0", "p_B"])
    assert np.isnan(top.loc["4-2.0", "p_B_bonferroni"]) and pd.isna(top.loc["4-2.0", "n_B"])
    assert top.replicated.to_dict() == {k: k == "1-2.0" for k in top.index}
    assert out.n_B.dtype == "Int64" and out.df_B.dtype == "Int64"
    # FDR over the discoveries instead: BH over the 4 carried p_B (missing one as 1)
    fdr = A.discover_and_replicate(disc, rep, alpha=0.05, significance="fdr").set_index("nidp")
    found = fdr[fdr.significant_fdr]
    carried = found.p_B.fillna(1.0).to_numpy()
    expected = multipletests(carried, method="fdr_bh")[1]
    got = found.p_B_fdr.to_numpy()
    assert np.allclose(got[~np.isnan(got)], expected[~np.isnan(found.p_B.to_numpy())])
    assert fdr.loc["1-2.0", "replicated"] and not fdr.loc["2-2.0", "replicated"]


def test_no_discovery_no_replication_columns_stay_empty():
    disc = _tests([("T1", "male", f"{i}-2.0", 300, 0.01, 290) for i in range(10)])
    out = A.discover_and_replicate(disc, disc, alpha=0.05)
    assert not out.significant_fdr.any() and not out.replicated.any()
    assert out.p_B_fdr.isna().all() and out.p_B.notna().all()


def _cohort(n=400, seed=3):
    rng = np.random.default_rng(seed)
    subjects = [str(1000000 + i) for i in range(n)]
    sex = rng.choice(["female", "male"], n)
    half = np.where(rng.random(n) < 0.5, "A", "B")
    age = rng.uniform(45, 80, n)
    deltas = pd.concat(
        [
            pd.DataFrame(
                {
                    "subject": subjects,
                    "sex": sex,
                    "split": "test",
                    "half": half,
                    "age": age,
                    "contrast": c,
                    "delta_corrected": rng.standard_normal(n),
                }
            )
            for c in ("T1", "swi")
        ],
        ignore_index=True,
    )
    t1 = deltas[deltas.contrast == "T1"].delta_corrected.to_numpy()
    nidps = pd.DataFrame(
        {
            "eid": subjects,
            "4080-2.0": 0.8 * t1 + rng.standard_normal(n),
            "30000-2.0": rng.standard_normal(n),
            "20116-2.0": rng.choice([0, 1, 2, -3], n).astype(float),
        }
    )
    nidps.loc[rng.random(n) < 0.2, "30000-2.0"] = np.nan
    confounds = pd.DataFrame(
        {"eid": subjects, "site": rng.choice([1, 2, 3], n), "head_size": rng.normal(1, 0.1, n)}
    )
    return deltas, nidps, confounds


def test_associate_uses_one_half_only():
    deltas, nidps, confounds = _cohort()
    matrix = nidps.set_index("eid")
    conf = confounds.set_index("eid")
    args = (deltas, matrix, conf, ["site", "head_size"], ["site"])
    whole = A.associate(*args, groups=["female"], min_subjects=20)
    a = A.associate(*args, groups=["female"], half="A", min_subjects=20)
    b = A.associate(*args, groups=["female"], half="B", min_subjects=20)
    per_half = deltas[(deltas.sex == "female") & (deltas.contrast == "T1")].half.value_counts()
    key = (a.contrast == "T1") & (a.nidp == "4080-2.0")
    assert a[key].n.item() == per_half["A"]
    assert b[(b.contrast == "T1") & (b.nidp == "4080-2.0")].n.item() == per_half["B"]
    assert whole[(whole.contrast == "T1") & (whole.nidp == "4080-2.0")].n.item() == per_half.sum()


def _write_inputs(tmp_path, deltas, nidps, confounds):
    paths = {k: tmp_path / f"{k}.tsv" for k in ("nidps", "confounds")}
    paths["deltas"] = tmp_path / "all.csv"
    deltas.to_csv(paths["deltas"], index=False)
    nidps.to_csv(paths["nidps"], sep="\t", index=False)
    confounds.to_csv(paths["confounds"], sep="\t", index=False)
    return paths


CFG = {
    "groups": ["female", "male", "pooled"],
    "confounds": ["site", "head_size"],
    "categorical_confounds": ["site"],
    "min_subjects": 20,
    "alpha": 0.05,
    "significance": "fdr",
}


def test_run_associations_discovery_replication_files(tmp_path):
    deltas, nidps, confounds = _cohort()
    nidps["31-0.0"] = "text"  # not numeric
    nidps["50-2.0"] = 1.0  # constant
    nidps = pd.concat([nidps, nidps.iloc[[0]]], ignore_index=True)  # a duplicated subject
    p = _write_inputs(tmp_path, deltas, nidps, confounds)
    out = {k: tmp_path / "out" / f"{k}.tsv" for k in ("all", "significant", "dropped")}
    A.run_associations(p["deltas"], p["nidps"], p["confounds"], CFG, *out.values())
    table = pd.read_csv(out["all"], sep="\t")
    assert list(table.columns[:6]) == ["contrast", "sex", "nidp", "field", "title", "category"]
    assert list(table.columns[-8:]) == [*A.REPLICATION_COLUMNS, "p_B_fdr", "replicated"]
    assert A.find_replication_p_column(table) == "p_B_fdr"
    assert set(table.sex) == {"female", "male", "pooled"}
    assert (np.diff(table.neglog10_p) <= 0).all()  # most significant first
    assert "20116-2.0=2" in set(table.nidp) and "20116-2.0" not in set(table.nidp)
    sig = pd.read_csv(out["significant"], sep="\t")
    assert len(sig) == table.significant_fdr.sum() > 0
    top = sig.iloc[0]
    assert (top.contrast, top.nidp) == ("T1", "4080-2.0")
    assert top.title == "Systolic blood pressure, automated reading"
    assert top.replicated and top.r_B > 0 and top.n + top.n_B <= 400
    dropped = pd.read_csv(out["dropped"], sep="\t").set_index("nidp").reason
    assert dropped["31-0.0"] == "not numeric" and dropped["50-2.0"] == "constant"
    assert dropped["(rows)"].startswith("1 duplicated subject id")


def test_run_associations_without_replication_and_without_halves(tmp_path):
    deltas, nidps, confounds = _cohort()
    deltas["half"] = ""
    p = _write_inputs(tmp_path, deltas, nidps, confounds)
    out = [tmp_path / f"{k}.tsv" for k in ("all", "significant", "dropped")]
    from agemapper.errors import ConfigError

    with pytest.raises(ConfigError, match="replication: false"):
        A.run_associations(p["deltas"], p["nidps"], p["confounds"], CFG, *out)
    A.run_associations(p["deltas"], p["nidps"], p["confounds"], {**CFG, "replication": False}, *out)
    table = pd.read_csv(out[0], sep="\t")
    assert "replicated" not in table.columns and "p_B" not in table.columns
    assert table[(table.nidp == "4080-2.0") & (table.sex == "pooled")].n.max() == 400


def test_run_associations_with_every_test_left_out_writes_empty_tables(tmp_path, caplog):
    """A cohort too small for its confounds: empty tables and a warning, not a crash."""
    deltas, nidps, confounds = _cohort()
    p = _write_inputs(tmp_path, deltas, nidps, confounds)
    out = [tmp_path / f"{k}.tsv" for k in ("all", "significant", "dropped")]
    cfg = {**CFG, "min_subjects": 10_000}
    with caplog.at_level("WARNING"):
        A.run_associations(p["deltas"], p["nidps"], p["confounds"], cfg, *out)
    table = pd.read_csv(out[0], sep="\t")
    assert len(table) == 0 and {"contrast", "nidp", "title", "replicated"} <= set(table.columns)
    assert len(pd.read_csv(out[1], sep="\t")) == 0
    assert "no association was tested" in caplog.text


def test_infinite_confounds_are_missing_ones_and_infinite_nidps_missing_values(tmp_path):
    """+inf/-inf: a confound is treated as a missing one (strict: an error naming the subject
    and the column; skip: recorded and left out); an nIDP value is missing, like NaN."""
    from agemapper.errors import InputDataError

    deltas, nidps, confounds = _cohort()
    bad = confounds.eid.iloc[[5, 9]].tolist()
    confounds.loc[[5, 9], "head_size"] = [np.inf, -np.inf]
    nidps.loc[[1, 2, 3], "4080-2.0"] = np.inf
    p = _write_inputs(tmp_path, deltas, nidps, confounds)
    assert "inf" in p["confounds"].read_text()  # as a file holds them
    out = [tmp_path / f"{k}.tsv" for k in ("all", "significant", "dropped")]
    with pytest.raises(InputDataError) as err:
        A.run_associations(p["deltas"], p["nidps"], p["confounds"], CFG, *out)
    message = str(err.value)
    assert f"subject {bad[0]}" in message and "infinite confound(s) ['head_size']" in message
    assert "head_size=inf" in message and "1 more test subjects" in message
    qc = tmp_path / "qc.tsv"
    A.run_associations(
        p["deltas"], p["nidps"], p["confounds"], CFG, *out, qc="skip", out_qc=qc
    )  # fmt: skip
    recorded = pd.read_csv(qc, sep="\t", dtype=str)
    assert set(recorded.subject) == set(bad)
    assert recorded.problem.str.contains("infinite confound").all()
    assert "head_size=-inf" in " ".join(recorded.problem)
    table = pd.read_csv(out[0], sep="\t")
    assert np.isfinite(table[["r", "t", "p"]].to_numpy()).all()
    pooled = table[(table.sex == "pooled") & (table.contrast == "T1")].set_index("nidp")
    in_half = deltas[(deltas.contrast == "T1") & (deltas.half == "A")].subject
    expected = len(set(in_half) - set(bad) - set(nidps.eid.iloc[[1, 2, 3]]))
    assert pooled.loc["4080-2.0", "n"] == expected
