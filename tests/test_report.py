"""Figures, pages and the association browser's data (CPU, seconds; no browser needed)."""

from __future__ import annotations

import base64
import gzip
import json
import re

import numpy as np
import pandas as pd
import pytest

from agemapper.report import browser, pages, plots, tables
from agemapper.report.uncertainty import calibration

PNG = b"\x89PNG"


def _assoc(rows) -> pd.DataFrame:
    """An association table from (contrast, sex, nidp, field, category, p, fdr, bonf, rep)."""
    frame = pd.DataFrame(
        rows,
        columns=[
            "contrast",
            "sex",
            "nidp",
            "field",
            "category",
            "p",
            "significant_fdr",
            "significant_bonferroni",
            "replicated",
        ],
    )
    frame["title"] = "title of " + frame.nidp
    frame["n"] = 100
    frame["r"] = 0.2
    frame["neglog10_p"] = -np.log10(frame.p)
    frame["p_fdr"] = np.where(frame.significant_fdr, 0.01, 0.5)
    frame["p_bonferroni"] = np.where(frame.significant_bonferroni, 0.01, 1.0)
    frame["r_B"] = 0.15
    frame["p_B_fdr"] = np.where(frame.significant_fdr, 0.02, np.nan)
    return frame


HEATMAP_ROWS = [
    # one field (4080) through two instances and an array entry: counts once
    ("T1", "female", "4080-2.0", 4080, "blood pressure", 1e-6, True, True, True),
    ("T1", "female", "4080-3.0", 4080, "blood pressure", 1e-5, True, True, False),
    ("T1", "male", "4080-2.1", 4080, "blood pressure", 1e-5, True, False, False),
    # one categorical field (20116) through two levels: counts once
    ("T1", "female", "20116-2.0=1", 20116, "tobacco", 1e-4, True, False, False),
    ("T1", "female", "20116-2.0=2", 20116, "tobacco", 1e-4, True, True, False),
    # FDR-significant only
    ("swi", "female", "30000-2.0", 30000, "blood assays", 1e-3, True, False, False),
    ("swi", "female", "21001-2.0", 21001, "body", 0.3, False, False, False),
]


@pytest.mark.parametrize("significance", ["fdr", "bonferroni"])
def test_heatmap_counts_the_configured_column_and_each_field_once(tmp_path, significance):
    table = _assoc(HEATMAP_ROWS)
    counts = plots.significance_heatmap(table, tmp_path / "h.png", significance, 0.05)
    assert (tmp_path / "h.png").read_bytes()[:4] == PNG
    got = {(c, k): int(v) for (c, k), v in counts.stack().items() if v}
    if significance == "fdr":
        assert got == {
            ("T1", "blood pressure"): 1,
            ("T1", "tobacco"): 1,
            ("swi", "blood assays"): 1,
        }
    else:  # the bonferroni column: swi's FDR-only discovery is not counted
        assert got == {("T1", "blood pressure"): 1, ("T1", "tobacco"): 1}
    assert list(counts.index) == ["T1", "swi"]
    with pytest.raises(ValueError, match="significant_holm"):
        plots.significance_heatmap(table, tmp_path / "x.png", "holm")


def test_field_key_joins_instances_arrays_and_levels():
    frame = pd.DataFrame(
        {
            "nidp": ["4080-2.0", "4080-3.1", "20116-2.0=1", "my_score", "20116-2.0=2"],
            "field": ["4080", "4080", "20116", "", np.nan],
        }
    )
    assert tables.field_key(frame).tolist() == ["4080", "4080", "20116", "my_score", "20116"]
    assert tables.field_key(frame.drop(columns="field")).tolist()[1:3] == ["4080", "20116"]


def test_contrast_order_follows_the_config_then_natural_order():
    frame = pd.DataFrame({"contrast": ["rsfmri_10", "ensemble_mean", "swi", "rsfmri_2", "T1"]})
    assert tables.contrast_order(frame, ["swi", "T1", "absent"]) == [
        "swi",
        "T1",
        "rsfmri_2",
        "rsfmri_10",
        "ensemble_mean",
    ]


def test_manhattan_labels_categories_marks_replication_and_samples_the_background(
    tmp_path, monkeypatch
):
    rng = np.random.default_rng(0)
    rows = []
    for c in ("T1", "swi", "ensemble_mean"):
        for j in range(60):
            p = 10 ** -rng.uniform(0, 2)
            sig = j < 3
            p = p / 1e6 if sig else p
            nidp, category = f"{1000 + j}-2.0", "abc"[j % 3] * 3
            rows.append((c, "female", nidp, 1000 + j, category, p, sig, sig, sig and c == "T1"))
    table = _assoc(rows)
    monkeypatch.setattr(plots, "MAX_BACKGROUND_POINTS", 50)
    info = plots.manhattan(table, tmp_path / "m.png", 0.05, "fdr", top_hits=4, contrasts=["swi"])
    assert (tmp_path / "m.png").read_bytes()[:4] == PNG
    assert info["categories"] == ["aaa", "bbb", "ccc"]
    assert info["significant"] == 9 and info["replicated"] == 3
    assert info["background_drawn"] == 50  # of 171 non-significant tests
    assert len(info["labelled"]) == 3  # the 3 significant nIDPs (fewer than top_hits)
    assert info["contrasts"] == ["swi", "T1", "ensemble_mean"]


def test_delta_vs_age_shows_each_sex_where_pooling_hides_a_trend(tmp_path):
    rng = np.random.default_rng(1)
    age = rng.uniform(45, 80, 200)
    sex = np.repeat(["female", "male"], 100)
    slope = np.where(sex == "female", 0.3, -0.3)  # opposite trends left after correction
    deltas = pd.DataFrame(
        {
            "contrast": "rsfmri_0",
            "sex": sex,
            "split": "test",
            "age": age,
            "delta": -0.5 * (age - 62) + rng.normal(0, 2, 200),
            "delta_corrected": slope * (age - 62) + rng.normal(0, 1, 200),
        }
    )
    shown = plots.delta_vs_age(deltas, tmp_path / "d.png").set_index("sex")
    assert (tmp_path / "d.png").read_bytes()[:4] == PNG
    pooled = np.corrcoef(deltas.age, deltas.delta_corrected)[0, 1]
    assert abs(pooled) < 0.2
    assert shown.r_corrected["female"] > 0.7 and shown.r_corrected["male"] < -0.7
    assert (shown.r_raw < -0.7).all()


def test_mae_bars_sorted_best_first(tmp_path):
    metrics = pd.DataFrame(
        {
            "contrast": ["T1", "ensemble_linear", "swi"] * 2,
            "sex": ["female"] * 3 + ["male"] * 3,
            "split": "test",
            "mae": [3.0, 2.5, 4.0, 3.2, 2.4, 4.4],
            "mae_replicate_min": [2.9, np.nan, 3.8, 3.0, np.nan, 4.0],
            "mae_replicate_max": [3.4, np.nan, 4.5, 3.5, np.nan, 5.0],
            "mae_mean_age_baseline": 6.0,
            "r_predicted_age": 0.9,
        }
    )
    assert plots.mae_bars(metrics, tmp_path / "m.png") == ["ensemble_linear", "T1", "swi"]
    assert (tmp_path / "m.png").read_bytes()[:4] == PNG


def test_training_curves_integer_epochs_robust_range_and_restart_marks(tmp_path):
    one = pd.DataFrame(
        {
            "epoch": range(1, 8),
            "train_mae": [8, 6, 5, 4.5, 4, 3.8, 3.5],
            "val_mae": [8, 7, 60, 5, 4.6, 4.4, 4.5],  # a spike at epoch 3
            "best": [False] * 5 + [True, False],
        }
    )
    two = one.assign(val_mae=one.val_mae.clip(upper=9), restarted=[""] * 4 + ["stuck"] + [""] * 2)
    info = plots.training_curves({"replicate 1": one, "replicate 2": two}, tmp_path / "t.png", "x")
    assert (tmp_path / "t.png").read_bytes()[:4] == PNG
    assert all(float(t).is_integer() for t in info["xticks"])
    assert 8 <= info["ylim"] < 20  # the spike (60) does not set the range
    assert info["marked"] == {"replicate 2": {"restarted": [5]}}
    # no restart column, or one that is all False: nothing marked
    three = one.assign(restarted=False)
    info = plots.training_curves({"replicate 1": three}, tmp_path / "u.png", "x")
    assert info["marked"] == {}


def test_training_curves_draw_abandoned_attempts_of_a_restarted_replicate(tmp_path):
    steady = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_mae": [6, 4, 3], "val_mae": [6, 5, 4.5], "best": [True] * 3}
    )
    restarted = pd.DataFrame(  # stuck twice (flat), restarted, then learning
        {
            "epoch": [1, 2, 1, 2, 1, 2, 3],
            "train_mae": [6, 6, 6, 6, 5, 4, 3],
            "val_mae": [6.1, 6.1, 6.2, 6.2, 5, 4, 3.5],
            "best": [True] * 7,
            "attempt": [1, 1, 2, 2, 3, 3, 3],
            "restarted": ["", "flat", "", "flat", "", "", ""],
        }
    )
    histories = {"replicate 1": steady, "replicate 2": restarted}
    info = plots.training_curves(histories, tmp_path / "t.png", "T1_nonlinear, female")
    assert (tmp_path / "t.png").read_bytes()[:4] == PNG
    assert info["restarts"] == {"replicate 2": 2}
    assert info["marked"] == {"replicate 2": {"restarted": [2, 2]}}


def test_uncertainty_calibration_detects_spread_that_tracks_error(tmp_path):
    rng = np.random.default_rng(2)
    n = 400
    error = rng.normal(0, 3, n)
    deltas = pd.DataFrame(
        {
            "contrast": np.repeat(["T1", "swi"], n // 2),
            "sex": "female",
            "split": "test",
            "delta_corrected": error,
            # T1: the spread follows the error; swi: it does not
            "predicted_sd": np.r_[
                0.2 + 0.3 * np.abs(error[: n // 2]) + rng.uniform(0, 0.2, n // 2),
                rng.uniform(0.2, 1.0, n // 2),
            ],
        }
    )
    table, bins = calibration(deltas)
    rho = table.set_index("contrast").spearman_rho
    assert rho["T1"] > 0.8 and abs(rho["swi"]) < 0.2
    t1 = table.set_index("contrast").loc["T1"]
    assert t1.mae_highest_fifth > 3 * t1.mae_lowest_fifth
    assert t1.rho_low < t1.spearman_rho < t1.rho_high
    assert len(bins) == 10 and bins.n.sum() == n
    plots.uncertainty_calibration(table, bins, tmp_path / "u.png")
    assert (tmp_path / "u.png").read_bytes()[:4] == PNG
    empty, _ = calibration(deltas.drop(columns="predicted_sd"))
    assert empty.empty


def test_table_page_rounds_escapes_and_sorts_numbers_by_value():
    frame = pd.DataFrame(
        {"name": ["<b>x</b>", "y"], "p": [1.23456789e-12, 0.5], "ok": [True, False], "n": [10, 9]}
    )
    html = pages.table_page(frame, "A title", "what it is", source="results/x.tsv", synthetic=True)
    assert "Synthetic cohort." in html and "results/x.tsv" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert ">1.235e-12<" in html and 'data-v="1.23456789e-12"' in html
    assert ">yes<" in html and 'data-type="num"' in html
    assert "2 rows" in html and "http" not in html.split("<body>")[1]
    short = pages.table_page(frame, "t", max_rows=1)
    assert "the first 1 of 2 rows" in short and short.count("<tr>") == 2


def _study_like(n_nidps=400, contrasts=("T1", "swi", "tbss_FA"), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for c in contrasts:
        for s in ("female", "male"):
            for j in range(n_nidps):
                sig = j < 10
                p = 10 ** -rng.uniform(6, 12) if sig else rng.uniform(1e-4, 1)
                rows.append(
                    (c, s, f"{2000 + j}-2.0", 2000 + j, f"cat {j % 7}", p, sig, sig, sig and j < 5)
                )
    return _assoc(rows)


def test_browser_rows_all_significant_plus_a_background_sample():
    table = _study_like()
    sig = tables.significant(table, "fdr")
    chosen, note = browser.select_rows(table, sig, max_rows=500, background=300, strongest=50)
    assert sig[chosen.index].sum() == sig.sum() == 60
    assert len(chosen) == 60 + 300
    rest = table[~sig]
    strongest = rest.nsmallest(50, "p").index
    assert set(strongest) <= set(chosen.index)
    assert "all 60 significant tests" in note and "of 2,400 tests" in note
    whole, note = browser.select_rows(table, sig, max_rows=10_000)
    assert len(whole) == len(table) and note == "all 2,400 tests"


def test_browser_payload_and_specs():
    table = _study_like(n_nidps=50)
    data, rows = browser.payload(table, 0.05, "fdr", contrasts=["swi"], max_rows=100,
                                 background=40, strongest=10)  # fmt: skip
    meta = data["meta"]
    assert meta["tests"] == 300 and meta["significant"] == 60 and meta["loaded"] == 100
    assert meta["replicated"] == 30 and meta["method"] == "FDR"
    assert data["contrasts"] == ["swi", "T1", "tbss_FA"]
    assert len(data["tests"]["nidp"]) == 100 == len(data["tests"]["p"])
    assert sum(data["tests"]["sig"]) == 60 and sum(data["tests"]["rep"]) == 30
    # every loaded nIDP keeps the x of the full layout
    x, _ = tables.layout(table)
    assert data["nidps"]["x"] == [int(x[n]) for n in data["nidps"]["name"]]
    assert set(data["colours"]) == set(data["categories"])
    assert meta["max_fields"] == 2  # fields 0-9 in 7 categories: at most 2 per cell
    spec = browser.manhattan_spec(data)
    text = json.dumps(spec)
    assert '"name": "tests"' in text and "sel_contrast" in text and "replicated" in text
    assert "cat 0" in spec["layer"][1]["encoding"]["x"]["axis"]["labelExpr"]
    summary = json.dumps(browser.summary_spec(data))
    assert "distinct" in summary and "sel_category" in summary


def test_browser_page_is_self_contained(tmp_path):
    table = _study_like(n_nidps=30)
    meta = browser.write_browser(table, tmp_path / "b.html", 0.05, "fdr", synthetic=False)
    html = (tmp_path / "b.html").read_text()
    assert meta["bytes"] == len(html.encode())
    # nothing is fetched: no script or stylesheet has a src/href
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r"<link[^>]+href=", html)
    assert "Synthetic cohort." not in html

    def unpack(name):
        packed = re.search(rf'id="pack-{name}">(.*?)</script>', html, re.S)[1]
        return gzip.decompress(base64.b64decode(packed)).decode()

    assert "window.vegaEmbed" in unpack("vega")
    assert "window.DataTable=" in unpack("datatables") and "export{" not in unpack("datatables")
    assert json.loads(unpack("data"))["meta"]["tests"] == len(table)
    assert json.loads(unpack("manhattan"))["$schema"].startswith("https://vega.github.io/schema")
    assert html.count("</script>") == 7  # 6 packs and the glue
    assert len(html) < 1.5e6  # a data: URL in the HTML report must stay under 2 MB


def test_nothing_significant_still_gives_every_figure_and_page(tmp_path):
    rows = [r[:6] + (False, False, False) for r in HEATMAP_ROWS]
    table = _assoc(rows)
    assert tables.field_key(table.iloc[:0]).empty
    counts = plots.significance_heatmap(table, tmp_path / "h.png", "fdr")
    assert counts.to_numpy().sum() == 0
    info = plots.manhattan(table, tmp_path / "m.png")
    assert info["significant"] == 0 and info["labelled"] == []
    meta = browser.write_browser(table, tmp_path / "b.html")
    assert meta["significant"] == 0 and meta["loaded"] == len(table)
    for name in ("h", "m"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == PNG
