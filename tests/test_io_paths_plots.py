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
    write_table(target, pd.DataFrame({"x": [1.23456789, 1e-300], "n": [3, 4]}), digits=4)
    assert target.read_text().splitlines() == ["x\tn", "1.235\t3", "1e-300\t4"]
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
