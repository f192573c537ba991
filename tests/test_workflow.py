"""The workflow as users run it: full-scale planning, and the whole demo DAG at tiny size."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _run(args, cwd, timeout=900):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        SNAKEMAKE + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _job_counts(stdout: str) -> dict:
    counts = {}
    for m in re.finditer(r"^(\w+)\s+(\d+)$", stdout, flags=re.M):
        counts[m.group(1)] = int(m.group(2))
    return counts


def test_full_study_plans_342_networks_in_seconds(tmp_path):
    """57 contrasts x 2 sexes x 3 replicates on the released splits, without touching images."""
    for name in ("nidps.tsv", "confounds.tsv"):
        (tmp_path / name).write_text("eid\n")
    override = tmp_path / "paths.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "contrasts_table": str(REPO / "config/contrasts.tsv"),
                "cohort": {
                    "subjects": str(REPO / "datasets/ukb_subjects.tsv"),
                    "excluded": str(REPO / "datasets/ukb_excluded.txt"),
                    "data_directory": str(tmp_path / "no-images-here"),
                    "nidps": str(tmp_path / "nidps.tsv"),
                    "confounds": str(tmp_path / "confounds.tsv"),
                },
            }
        )
    )
    start = time.monotonic()
    res = _run(
        [
            "-n",
            "--nolock",
            "--quiet",
            "rules",
            "--directory",
            str(tmp_path),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            str(REPO / "config/ukb.yaml"),
            str(override),
        ],
        cwd=REPO,
    )
    elapsed = time.monotonic() - start
    assert res.returncode == 0, res.stderr[-3000:]
    counts = _job_counts(res.stdout + res.stderr)
    assert counts["train_networks"] == 57 * 2  # each job trains the 3 replicates: 342 networks
    assert counts["preprocess_contrast"] == 57 * 2 * 3
    assert counts["predict_brain_age"] == 57 * 2
    assert counts["correct_deltas"] == 1 and counts["associate_nidps"] == 1
    assert "generate_cohort" not in counts
    assert elapsed < 60, f"planning took {elapsed:.0f} s"


def _tiny_config(tmp_path) -> Path:
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["contrasts_table"] = str(REPO / "config/contrasts.tsv")
    cfg["contrasts"] = ["T1_nonlinear", "tbss_FA_s", "rsfmri_0"]
    cfg["synthetic"].update(
        splits=str(REPO / "datasets/ukb_subjects.tsv"),
        subjects_per_sex={"train": 8, "validation": 4, "testA": 10, "testB": 10},
    )
    cfg["training"].update(replicates=2, epochs=2, batch_size=4)
    cfg["associations"].update(groups=["female", "pooled"], min_subjects=6)
    cfg["runtime"] = {"device": "cpu"}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.workflow
def test_demo_dag_runs_end_to_end_and_reruns_nothing(tmp_path):
    config = _tiny_config(tmp_path)
    args = [
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(config),
    ]
    res = _run(["-c2", *args], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-5000:]
    results = tmp_path / "results"

    deltas = pd.read_csv(results / "deltas/all.csv", dtype={"subject": str})
    assert list(deltas.columns[:8]) == [
        "subject",
        "sex",
        "split",
        "half",
        "age",
        "predicted",
        "delta",
        "delta_corrected",
    ]
    assert set(deltas.contrast) == {"T1_nonlinear", "tbss_FA_s", "rsfmri_0"}
    assert set(deltas.split) == {"validation", "test"}
    assert len(deltas) == 3 * 2 * (4 + 20)
    table = pd.read_csv(results / "associations/all.tsv", sep="\t")
    assert {
        "contrast",
        "sex",
        "nidp",
        "title",
        "category",
        "n",
        "r",
        "p",
        "neglog10_p",
        "p_bonferroni",
        "p_fdr",
        "n_B",
        "r_B",
        "p_B",
        "p_B_corrected",
        "replicated",
    } <= set(table.columns)
    assert set(table.sex) == {"female", "pooled"}
    assert table.n.max() <= 20 and table.n_B.max() <= 20  # pooled: 10 + 10 per half
    assert (results / "associations/significant.tsv").exists()
    assert "replicated" in (results / "evaluation/synthetic_truth.txt").read_text()
    assert "Brain age on the test split" in (results / "evaluation/synthetic_truth.txt").read_text()
    for rep in (1, 2):
        assert (results / f"models/rsfmri_0/male/replicate-{rep}/model.safetensors").exists()
    metrics = pd.read_csv(results / "models/T1_nonlinear/female/replicate-1/metrics.tsv", sep="\t")
    assert list(metrics.epoch) == [1, 2]
    assert not list((results / "cache").glob("*/*.npy"))  # caches are temporary
    assert not list(results.rglob("*.tmp*"))
    assert "epoch 2/2" in (results / "logs/train_networks/T1_nonlinear_female.log").read_text()

    again = _run(["-n", *args], cwd=tmp_path)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
    shutil.rmtree(results / "synthetic/subjectsAll")  # the images are large; keep tmp small
