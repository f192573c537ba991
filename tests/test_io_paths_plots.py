import pandas as pd
import pytest

from agemapper import paths
from agemapper.io import atomic_path, read_table, write_json, write_table
from agemapper.report.plots import predicted_vs_age


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.iterdir())
    write_table(target, pd.DataFrame({"a": [1]}))
    assert read_table(target).a.tolist() == [1]
    write_json(tmp_path / "x.json", {"b": 2})
    assert (tmp_path / "x.json").read_text().strip().startswith("{")


def test_paths_are_patterns_or_values():
    assert paths.cache() == "results/cache/{contrast}/{sex}_{split}.cache"
    assert paths.cache("swi", "male", "test") == "results/cache/swi/male_test.cache"
    assert paths.weights("swi", "male", 2).endswith("swi/male/replicate-2/model.safetensors")
    assert paths.manifest("a", "b", "c").replace(".tsv", ".cache") == paths.cache("a", "b", "c")


def test_predicted_vs_age_plot(tmp_path):
    rows = [
        {"contrast": c, "sex": s, "split": "test", "age": 50 + i, "predicted": 51 + i}
        for c in ("T1_nonlinear", "swi")
        for s in ("female", "male")
        for i in range(5)
    ]
    predicted_vs_age(pd.DataFrame(rows), tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_report_figures(tmp_path):
    import numpy as np

    from agemapper.report import plots

    rng = np.random.default_rng(0)
    deltas = pd.DataFrame(
        {
            "contrast": np.repeat(["T1_nonlinear", "ensemble_linear"], 40),
            "sex": "female",
            "split": "test",
            "age": rng.uniform(45, 80, 80),
        }
    )
    deltas["predicted"] = deltas.age + rng.normal(0, 3, 80)
    deltas["delta"] = deltas.predicted - deltas.age
    deltas["delta_corrected"] = rng.normal(0, 3, 80)
    plots.delta_vs_age(deltas, tmp_path / "d.png")
    metrics = pd.DataFrame(
        {
            "contrast": ["T1_nonlinear", "ensemble_linear"] * 2,
            "sex": ["female"] * 2 + ["male"] * 2,
            "split": "test",
            "mae": [3.0, 2.5, 3.2, 2.4],
            "mae_replicate_min": [2.9, np.nan, 3.0, np.nan],
            "mae_replicate_max": [3.4, np.nan, 3.5, np.nan],
            "mae_mean_age_baseline": 6.0,
            "r_predicted_age": 0.9,
        }
    )
    plots.mae_bars(metrics, tmp_path / "m.png")
    assoc = pd.DataFrame(
        {
            "contrast": ["T1_nonlinear", "swi"] * 3,
            "nidp": ["1-2.0", "1-2.0", "2-2.0", "2-2.0", "3-2.0", "3-2.0"],
            "category": ["a", "a", "b", "b", "", ""],
            "neglog10_p": [5.0, 0.5, 1.0, 0.2, 3.0, 0.1],
            "p_fdr": [1e-4, 0.6, 0.3, 0.7, 0.01, 0.8],
            "significant_fdr": [True, False, False, False, True, False],
        }
    )
    plots.manhattan(assoc, tmp_path / "h.png")
    plots.significance_heatmap(assoc, tmp_path / "x.png")
    hist = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_mae": [6, 4, 3],
            "val_mae": [6, 5, 4.5],
            "best": [True, True, False],
        }
    )
    restarted = pd.DataFrame(  # stuck twice (flat), restarted, then learning
        {
            "epoch": [1, 2, 1, 2, 1, 2, 3],
            "train_mae": [6, 6, 6, 6, 5, 4, 3],
            "val_mae": [6.1, 6.1, 6.2, 6.2, 5, 4, 3.5],
            "best": [True, True, True, True, True, True, True],
            "attempt": [1, 1, 2, 2, 3, 3, 3],
            "restarted": ["", "flat", "", "flat", "", "", ""],
        }
    )
    histories = {"replicate 1": hist, "replicate 2": restarted}
    plots.training_curves(histories, tmp_path / "t.png", "T1_nonlinear, female")
    for name in "dmhxt":
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_job_log_names_its_slurm_job(tmp_path, monkeypatch):
    """A rule's log says which SLURM job wrote it (retries replace the log of the last try)."""
    import logging
    import sys

    from agemapper.runner import log_to

    handlers, level = logging.root.handlers[:], logging.root.level
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # log_to redirects stderr; restore it
    try:
        monkeypatch.setenv("SLURM_JOB_ID", "31337")
        log_to(tmp_path / "job.log").info("working")
        monkeypatch.delenv("SLURM_JOB_ID")
        log_to(tmp_path / "local.log").info("working")
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    assert "SLURM job 31337 on " in (tmp_path / "job.log").read_text()
    assert "SLURM job" not in (tmp_path / "local.log").read_text()
