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

import browser_checks
from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# the tables of the demo's report, as pages (results/report/NAME.html)
PAGES = (
    "metrics",
    "uncertainty",
    "weights",
    "qc",
    "significant",
    "associations",
    "dropped",
    "scale_factors",
)


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


def full_study_paths(tmp_path) -> Path:
    """A config override pointing config/ukb.yaml at the released splits and empty tables."""
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
    return override


def test_full_study_plans_342_networks_in_seconds(tmp_path):
    """57 contrasts x 2 sexes x 3 replicates on the released splits, without touching images."""
    override = full_study_paths(tmp_path)
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


def _workdir_args(workdir: Path, *configs: Path) -> list[str]:
    """Run the repository's Snakefile in ``workdir`` with the given config files."""
    return [
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        *map(str, configs),
    ]


@pytest.mark.workflow
def test_demo_dag_runs_end_to_end_and_reruns_nothing(tmp_path):
    config = _tiny_config(tmp_path)
    args = _workdir_args(tmp_path, config)
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
    contrasts = {"T1_nonlinear", "tbss_FA_s", "rsfmri_0"}
    ensembles = {"ensemble_mean", "ensemble_linear", "ensemble_elastic_net"}
    assert set(deltas.contrast) == contrasts | ensembles
    assert set(deltas.split) == {"validation", "test"}
    assert len(deltas) == 6 * 2 * (4 + 20)
    assert deltas.predicted_sd.notna().all() and (deltas.predicted_sd >= 0).all()
    weights = pd.read_csv(results / "ensembles/weights.tsv", sep="\t")
    assert set(weights.term) == contrasts | {"(intercept)"}
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
        "p_B_fdr",
        "replicated",
    } <= set(table.columns)
    assert set(table.sex) == {"female", "pooled"}
    assert ensembles <= set(table.contrast)  # ensembles flow into the associations
    assert table.n.max() <= 20 and table.n_B.max() <= 20  # pooled: 10 + 10 per half
    assert (results / "associations/significant.tsv").exists()
    evaluation = (results / "evaluation/synthetic_truth.txt").read_text()
    assert "Brain age on the test split" in evaluation and "best ensemble" in evaluation
    assert "replicated" in evaluation
    for rep in (1, 2):
        assert (results / f"models/rsfmri_0/male/replicate-{rep}/model.safetensors").exists()
    metrics = pd.read_csv(results / "models/T1_nonlinear/female/replicate-1/metrics.tsv", sep="\t")
    assert list(metrics.epoch) == [1, 2]
    for plot in (
        "predicted_vs_age",
        "delta_vs_age",
        "mae",
        "manhattan",
        "significance_heatmap",
        "training/tbss_FA_s_male",
        "uncertainty",
    ):
        assert (results / f"plots/{plot}.png").read_bytes()[:4] == b"\x89PNG"
    for page in (*(f"report/{name}" for name in PAGES), "evaluation/synthetic_truth"):
        html = (results / f"{page}.html").read_text()
        assert "Synthetic cohort." in html and "<table" in html, page
    assert "none: no subject was left out" in (results / "report/qc.html").read_text()
    browser = results / "associations/browser.html"
    if browser_checks.missing() is None or os.environ.get("AGEMAPPER_REQUIRE_BROWSER"):
        browser_checks.require()
        seen = browser_checks.check_browser_page(browser, tmp_path / "browser.png")
        assert seen["rows"] == len(table)
    assert not list((results / "cache").glob("*/*.cache"))  # caches are temporary
    assert not list(results.rglob("*.tmp*"))
    assert "epoch 2/2" in (results / "logs/train_networks/T1_nonlinear_female.log").read_text()

    report = _run(["--report", str(tmp_path / "report.html"), *args], cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert "Brain age" in html and "Associations" in html and "Training" in html
    assert "predicted_vs_age.png" in html and "manhattan.png" in html
    assert "browser.html" in html and "synthetic_truth.html" in html
    assert all(f"{name}.html" in html for name in PAGES)
    assert "Synthetic cohort." in html  # the banner of the workflow description

    _check_apply_mode(tmp_path, config)

    again = _run(["-n", *args], cwd=tmp_path)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
    shutil.rmtree(results / "synthetic/subjectsAll")  # the images are large; keep tmp small


def _bad_cohort(tmp_path, qc):
    """A tiny cohort generated by the workflow, then one validation image truncated."""
    config = _tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg.update(qc=qc, contrasts=["T1_nonlinear", "tbss_FA_s"])
    cfg["training"].update(epochs=1)
    config.write_text(yaml.safe_dump(cfg))
    args = _workdir_args(tmp_path, config)
    res = _run(["-c2", "results/synthetic/truth/cohort.json", *args], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    subjects = pd.read_csv(tmp_path / "results/synthetic/subjects.tsv", sep="\t", dtype=str)
    bad = subjects[(subjects.sex == "female") & (subjects.split == "validation")].subject.iloc[0]
    path = tmp_path / "results/synthetic/subjectsAll" / bad / "T1/T1_brain_to_MNI.nii.gz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    return args, bad, path, good


@pytest.mark.workflow
def test_strict_failure_then_rerun_recomputes_only_what_is_missing(tmp_path):
    args, bad, path, good = _bad_cohort(tmp_path, "strict")
    res = _run(["-c2", "--keep-going", *args], cwd=tmp_path)
    assert res.returncode != 0
    log = tmp_path / "results/logs/preprocess_contrast/T1_nonlinear_female_validation.log"
    text = log.read_text()
    assert f"subject {bad}" in text and str(path.name) in text and "truncated" in text
    # everything that did not depend on the bad file was kept
    assert (tmp_path / "results/models/tbss_FA_s/female/replicate-1/model.safetensors").exists()
    assert (tmp_path / "results/predictions/T1_nonlinear/male.tsv").exists()

    path.write_bytes(good)  # the user repairs the download
    plan = _run(["-n", "--quiet", "rules", *args], cwd=tmp_path)
    counts = _job_counts(plan.stdout + plan.stderr)
    assert counts.get("preprocess_contrast") == 1  # only the failed job, not the other 11
    assert counts.get("train_networks") == 1 and counts.get("predict_brain_age") == 1
    assert "generate_cohort" not in counts
    res = _run(["-c2", *args], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.rmtree(tmp_path / "results/synthetic/subjectsAll")


@pytest.mark.workflow
def test_skip_policy_leaves_the_subject_out_and_reports_it(tmp_path):
    args, bad, path, _ = _bad_cohort(tmp_path, "skip")
    res = _run(["-c2", *args], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    qc = pd.read_csv(tmp_path / "results/qc/skipped.tsv", sep="\t", dtype=str)
    assert qc.subject.tolist() == [bad] and "truncated" in qc.problem[0]
    assert qc.contrast[0] == "T1_nonlinear" and qc.split[0] == "validation"
    assert "QC: 1 subject/contrast entries left out" in res.stdout + res.stderr
    deltas = pd.read_csv(tmp_path / "results/deltas/all.csv", dtype={"subject": str})
    assert bad not in set(deltas[deltas.contrast == "T1_nonlinear"].subject)
    assert bad in set(deltas[deltas.contrast == "tbss_FA_s"].subject)
    shutil.rmtree(tmp_path / "results/synthetic/subjectsAll")


def _check_apply_mode(trained: Path, config: Path) -> None:
    """Apply the trained run's networks to its own test subjects, as a new cohort would be."""
    new = trained / "apply"
    new.mkdir()
    synth = trained / "results/synthetic"
    subjects = pd.read_csv(synth / "subjects.tsv", sep="\t", dtype=str)
    subjects[subjects.split == "test"].to_csv(new / "subjects.tsv", sep="\t", index=False)
    apply_cfg = {
        "apply": {"results": str(trained / "results")},
        "cohort": {
            "subjects": str(new / "subjects.tsv"),
            "data_directory": str(synth / "subjectsAll"),
            "nidps": str(synth / "nidps.tsv"),
            "confounds": str(synth / "confounds.tsv"),
        },
    }
    (new / "apply.yaml").write_text(yaml.safe_dump(apply_cfg))
    args = [
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(new),
        "--configfile",
        str(config),
        str(new / "apply.yaml"),
    ]
    res = _run(["-c2", "results/deltas/all.csv", *args], cwd=new)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "train_networks" not in res.stdout + res.stderr  # nothing is trained
    got = pd.read_csv(new / "results/deltas/all.csv", dtype={"subject": str})
    ref = pd.read_csv(trained / "results/deltas/all.csv", dtype={"subject": str})
    ref = ref[ref.split == "test"]
    merged = ref.merge(got, on=["subject", "contrast"], suffixes=("", "_applied"))
    assert len(merged) == len(ref) == len(got)
    for col in ("predicted", "delta", "delta_corrected"):
        assert (merged[col] - merged[f"{col}_applied"]).abs().max() < 1e-6, col

    # a network is refused when its metadata does not match what it is asked to run
    table = pd.read_csv(REPO / "config/contrasts.tsv", sep="\t")
    table.loc[table.contrast == "tbss_FA_s", "scale_factor"] *= 2
    table.to_csv(new / "contrasts.tsv", sep="\t", index=False)
    (new / "other.yaml").write_text(yaml.safe_dump({"contrasts_table": str(new / "contrasts.tsv")}))
    shutil.rmtree(new / "results")
    res = _run(
        ["-c2", "results/predictions/tbss_FA_s/female.tsv", *args, str(new / "other.yaml")], cwd=new
    )
    assert res.returncode != 0
    log = (new / "results/logs/predict_brain_age/tbss_FA_s_female.log").read_text()
    assert "does not match its input" in log and "scale_factor" in log
