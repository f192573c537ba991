"""Every command README.md and the docs show, run as written from the root of a fresh clone.

A fresh clone is a copy of the repository's files (what ``git clone`` would give, plus work not
yet committed) in a temporary folder. Commands run there with ``bash -c``, exactly as shown:

- the demo's set-up-and-run line for real (a new venv, the install, the whole demo), then the
  demo commands on its results;
- the study's commands against a rehearsal cohort in the UK Biobank layout (tests/rehearsal.py),
  with the paths in ``config/site.yaml`` as the README tells a user to put them: the cluster
  commands (``--profile slurm``) as dry runs (``-n``), at full size (342 networks) and again
  after a real run of the study at rehearsal size, which the README's local command does;
- apply mode and the import of an original network in clones of their own.

What cannot run here runs elsewhere, and this file says where (``PLAN``): the test command is
CI's own (.ci/run runs the README's line), SLURM's tools run on the test cluster
(tests/test_slurm.py), benchmarks run in their smoke mode. A command shown without a plan, or a
plan for a command no page shows, fails the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import rehearsal
import torch
import yaml
from readme_commands import REPO, shown_commands

import browser_checks

BIN = str(Path(sys.executable).parent)
DEMO_LINE = (
    'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[dev]" '
    "&& .venv/bin/snakemake -c2 all"
)
TEST_LINE = (
    'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[dev]" '
    "&& .venv/bin/python -m pytest"
)
STUDY_LOCAL = "snakemake -c4 results/deltas/all.csv --configfile config/ukb.yaml config/site.yaml"
STUDY_ASSOC = (
    "snakemake -c4 results/associations/significant.tsv --configfile config/ukb.yaml "
    "config/site.yaml"
)
APPLY = (
    "snakemake -c4 results/deltas/all.csv --configfile config/ukb.yaml config/site.yaml "
    "config/apply.yaml"
)
LEGACY = (
    "agemapper import-original ORIGINAL.pth.tar "
    "networks/T1_nonlinear/female/replicate-1/model.safetensors --contrast T1_nonlinear "
    "--sex female"
)
# pretrained mode: the original release's networks imported, then predicting a cohort
IMPORT_RELEASE = "agemapper import-original original_networks networks"
PRETRAINED = (
    "snakemake -c4 results/deltas/all.csv --configfile config/ukb.yaml config/site.yaml "
    "config/pretrained.yaml"
)
EXPORT = "agemapper export-original results/models exported"
LOCKED = "python3 -m venv .venv && .venv/bin/pip install -r requirements.lock.txt -e ."
HELP = ["agemapper --help", "agemapper import-original --help", "agemapper export-original --help"]
FORCE_TWO = (
    "snakemake --profile slurm results/deltas/all.csv --forcerun "
    "results/models/T1_nonlinear/female/replicate-1/model.safetensors "
    "results/models/rsfmri_3/female/replicate-1/model.safetensors"
)
# the cluster commands of the study: dry runs before and after the rehearsal's real run
CLUSTER = [
    "snakemake --profile slurm results/deltas/all.csv",
    "snakemake --profile slurm results/associations/significant.tsv",
    "snakemake --profile slurm -n results/deltas/all.csv",
    "snakemake --profile slurm results/deltas/all.csv --configfile config/config.yaml",
    "snakemake --profile slurm results/deltas/all.csv --config contrasts='[T1_nonlinear,swi]'",
    "snakemake --profile slurm results/predictions/swi/female.tsv",
    "snakemake --profile slurm --unlock",
    "snakemake --profile slurm results/deltas/all.csv --rerun-incomplete",
    FORCE_TWO,
    "snakemake --profile slurm results/deltas/all.csv --forcerun correct_deltas",
    "snakemake --profile slurm --list-changes code",
    "snakemake --profile slurm results/deltas/all.csv --forcerun predict_brain_age",
]
FORCE_PREDICT = CLUSTER[-1]
DEMO = [
    DEMO_LINE,
    "snakemake -c2 all",
    "snakemake -c2",
    "snakemake -c2 results/associations/significant.tsv",
    "snakemake -c2 results/associations/significant.tsv results/evaluation/synthetic_truth.txt",
    "snakemake --report report.html",
    "snakemake --report report.zip",
    "snakemake --lint",
    "snakefmt --check Snakefile workflow/rules",
    "ruff check .",
    "ruff format --check .",
]
BENCHMARKS = [
    "python benchmarks/associations.py",
    "python benchmarks/associations.py --blas-threads 1",
    "python benchmarks/train_throughput.py",
    "python benchmarks/train_throughput.py --device cpu --subjects 12 --batch 2 --steps 2 "
    "--warmup 1 --workers 2",
    "python benchmarks/ensembles.py",
    "python benchmarks/ensembles.py --nonnegative",
    "python benchmarks/browser.py",
    "python benchmarks/preprocess_throughput.py --subjects 4 --copies 10 --repeats 3",
    "python benchmarks/training_fidelity.py --small",
    "python benchmarks/training_fidelity.py --seeds 0 1 2 --variants reference "
    '"shared batch order" threshold_mode output_bias "restarts on (the demo)"',
    "python benchmarks/precision_accuracy.py T1_nonlinear tbss_FA_s --seeds 0 1",
]
# the tables of the demo's report, as pages (results/report/NAME.html)
PAGES = ("metrics", "uncertainty", "weights", "qc", "significant", "associations", "dropped",
         "scale_factors")  # fmt: skip
ELSEWHERE = {
    TEST_LINE: "CI: .ci/run runs this line verbatim (test_ci_runs_the_readme_test_command)",
    'pytest -m "not slurm"': "a subset of the test command CI runs",
    "python3 tests/slurm_cluster.py install": "CI: .ci/run runs it before the tests",
    "squeue --me": "tests/test_slurm.py::test_readme_slurm_tool_runs, on the test cluster",
    # no conda channel is reachable from this project's machines (PyPI, Debian and npm only);
    # tests/test_packaging.py checks environment.lock.yml against requirements.lock.txt, whose
    # pip line runs for real in the demo clone
    "conda env create -f environment.lock.yml": "needs conda; its pins are checked instead",
    "conda activate agemapper-lock": "needs conda; see the line above",
}
PLAN = {
    **{c: "demo clone, for real" for c in DEMO},
    **{c: "study clone, dry run (-n) or as written" for c in CLUSTER},
    STUDY_LOCAL: "study clone, rehearsal, for real",
    STUDY_ASSOC: "study clone, rehearsal, for real",
    APPLY: "apply clone, for real",
    LEGACY: "import clone, for real",
    IMPORT_RELEASE: "pretrained clone, for real",
    PRETRAINED: "pretrained clone, for real",
    EXPORT: "study clone, for real, after the rehearsal",
    LOCKED: "demo clone, for real, after the demo",
    **{c: "import clone, for real" for c in HELP},
    **{c: "smoke mode (--small/--tiny)" for c in BENCHMARKS},
    **ELSEWHERE,
}


def fresh_clone(dest: Path) -> Path:
    """The repository's files (tracked and new, not ignored) copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def shell(command: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a shown command with bash in ``cwd``, the environment's tools first on PATH.

    The environment is the clone's own ``.venv`` once the README's set-up line made one (as a
    user who activated it), else the one running the tests, with the clone's package first
    (its ``agemapper`` command would otherwise run the package that environment installed).
    """
    tools = str(cwd / ".venv/bin") if (cwd / ".venv/bin/snakemake").exists() else BIN
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    if tools == BIN:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
    res = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    res.output = res.stdout + res.stderr
    return res


def dry(command: str) -> str:
    return (
        command
        if re.search(r"(^| )(-n|--dry-run|--unlock|--list-changes)( |$)", command)
        else (command + " -n")
    )


def job_counts(output: str) -> dict[str, int]:
    """The job-count table Snakemake prints with a plan."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", output, flags=re.M)}


def planned_jobs(output: str) -> list[dict]:
    """Rule, threads and resources of each job a dry run printed."""
    jobs = []
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", output)[1:]:
        job = {"rule": re.match(r"\s*(?:local)?rule (\w+):", block).group(1), "threads": 1}
        if m := re.search(r"^\s*threads: (\d+)", block, re.M):
            job["threads"] = int(m.group(1))
        if m := re.search(r"^\s*resources: (.*)$", block, re.M):
            job.update(dict(kv.split("=", 1) for kv in m.group(1).split(", ")))
        jobs.append(job)
    return jobs


# ------------------------------------------------------------------------ what is shown


def test_every_shown_command_has_a_plan():
    shown = shown_commands()
    unplanned = {c: p for c, p in shown.items() if c not in PLAN}
    assert not unplanned, f"shown but never run by a test (add it to PLAN): {unplanned}"
    stale = [c for c in PLAN if c not in shown]
    assert not stale, f"planned but no longer shown: {stale}"


def test_ci_runs_the_readme_test_command():
    """.ci/run takes the README's second command verbatim; the demo line shares its set-up."""
    lines = (REPO / "README.md").read_text().splitlines()
    picked = lines[next(i for i, line in enumerate(lines) if line.startswith("# 2.")) + 1]
    assert picked == TEST_LINE
    ci = (REPO / ".ci/run").read_text()
    assert "grep -m1 -A1 '^# 2\\.' README.md | tail -n 1" in ci and 'bash -c "$test_command"' in ci
    first = lines[next(i for i, line in enumerate(lines) if line.startswith("# 1.")) + 1]
    assert first == DEMO_LINE


# ------------------------------------------------------------------------ the demo


def assert_nidps_as_funpack_makes_them(results, table, instances):
    """The demo ran FUNPACK on its main dataset, and all.tsv tests each thing once, in words:
    one column per FUNPACK indicator, no column equal to or the complement of another, a
    two-level field one column, titles with the levels' meanings, only the visits asked for."""
    from agemapper.stats import nidps, ukb

    log = (results / "logs/extract_nidps/extract_nidps.log").read_text()
    assert "fmrib_unpack -cfg fmrib" in log and "FUNPACK wrote" in log
    tested = sorted(table.nidp.unique())
    assert {"6150-1.0", "6150-3.0", "2443-2.0=1"} <= set(tested)  # indicators, one test each
    assert not [n for n in tested if re.match(r"^6150-\d+\.0=", n)]  # not binarised again
    assert "2443-2.0=0" not in tested  # a yes/no field: one column
    assert not table.title.str.contains(" = ").any()  # every level in words
    assert "Vascular/heart problems diagnosed by doctor: Stroke" in set(table.title)
    assert "Smoking status: Current" in set(table.title)
    described = [nidps.describe(n) for n in tested]
    instancing = {
        f: v.get("instancing") for f, v in ukb.variables({d.field for d in described}).items()
    }
    visits = {d.instance for d in described if instancing[d.field] == ukb.VISIT_INSTANCING}
    assert visits - {None} == set(instances), visits
    raw = nidps.read_subject_table(results / "nidps/nidps.tsv")
    matrix, _ = nidps.prepare(raw, 1, instances=instances)
    values = matrix[tested]
    binary = [c for c in tested if set(values[c].dropna().unique()) <= {0.0, 1.0}]
    for i, a in enumerate(binary):
        for b in binary[i + 1 :]:
            x, y = values[a], values[b]
            if x.isna().equals(y.isna()):
                both = x.notna()
                assert not (x[both] == y[both]).all(), (a, b)
                assert not (x[both] == 1 - y[both]).all(), (a, b)  # complementary pair


@pytest.mark.workflow
def test_demo_commands_run_as_written(tmp_path):
    clone = fresh_clone(tmp_path / "demo")
    start = time.monotonic()
    res = shell(DEMO_LINE, clone, timeout=2400)
    minutes = (time.monotonic() - start) / 60
    assert res.returncode == 0, res.output[-6000:]
    print(f"demo line (venv, install, demo): {minutes:.1f} min")
    results = clone / "results"
    cfg = yaml.safe_load((clone / "config/config.yaml").read_text())
    n_test = sum(cfg["synthetic"]["subjects_per_sex"][h] for h in ("testA", "testB"))
    n_val = cfg["synthetic"]["subjects_per_sex"]["validation"]

    deltas = pd.read_csv(results / "deltas/all.csv", dtype={"subject": str})
    assert list(deltas.columns[:8]) == [
        "subject", "sex", "split", "half", "age", "predicted", "delta", "delta_corrected",
    ]  # fmt: skip
    ensembles = {f"ensemble_{m}" for m in cfg["ensembles"]["methods"]}
    assert set(deltas.contrast) == set(cfg["contrasts"]) | ensembles
    assert len(deltas) == len(set(deltas.contrast)) * 2 * (n_val + n_test)
    assert deltas[["predicted", "delta", "delta_corrected"]].notna().all().all()
    assert deltas.predicted_sd.notna().all() and (deltas.predicted_sd >= 0).all()
    table = pd.read_csv(results / "associations/all.tsv", sep="\t")
    assert {"contrast", "sex", "nidp", "title", "r", "p", "p_bonferroni", "p_fdr", "r_B"} <= set(
        table.columns
    )
    assert ensembles <= set(table.contrast)
    assert_nidps_as_funpack_makes_them(results, table, cfg["associations"]["instances"])
    evaluation = (results / "evaluation/synthetic_truth.txt").read_text()
    assert "Brain age on the test split" in evaluation and "replicated" in evaluation
    for plot in ("predicted_vs_age", "delta_vs_age", "mae", "manhattan", "significance_heatmap",
                 "uncertainty"):  # fmt: skip
        assert (results / f"plots/{plot}.png").read_bytes()[:4] == b"\x89PNG"
    for page in (*(f"report/{name}" for name in PAGES), "evaluation/synthetic_truth"):
        html = (results / f"{page}.html").read_text()
        assert "Synthetic cohort." in html and "<table" in html, page
    browser = results / "associations/browser.html"
    if browser_checks.missing() is None or os.environ.get("AGEMAPPER_REQUIRE_BROWSER"):
        browser_checks.require()
        seen = browser_checks.check_browser_page(browser, tmp_path / "browser.png")
        assert seen["rows"] == len(table)
    assert not list((results / "cache").glob("*/*.cache"))  # caches are temporary
    assert not list(results.rglob("*.tmp*"))
    assert (results / "run.json").exists()

    for command in DEMO[1:]:
        res = shell(command, clone)
        assert res.returncode == 0, f"{command}\n{res.output[-4000:]}"
        if command.startswith("snakemake -c2"):
            assert "Nothing to be done" in res.output, command
    assert (clone / "report.zip").stat().st_size > 100_000
    html = (clone / "report.html").read_text()
    assert "Brain age" in html and "Associations" in html and "manhattan.png" in html
    assert "browser.html" in html and "synthetic_truth.html" in html
    assert all(f"{name}.html" in html for name in PAGES)
    assert "Synthetic cohort." in html  # the banner of the workflow description

    # the pinned environment installs over the demo's (the same venv; only pins that differ)
    res = shell(LOCKED, clone, timeout=1800)
    assert res.returncode == 0, res.output[-3000:]

    # the README's smoke-mode benchmark that needs a demo run: on this one
    res = shell(BENCHMARKS[-1] + " --small", clone, timeout=900)
    assert res.returncode == 0, res.output[-3000:]
    shutil.rmtree(results / "synthetic/subjectsAll")  # 5 GB of images: keep tmp small


# ------------------------------------------------------------------------ the study


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return rehearsal.build(tmp_path_factory.mktemp("rehearsal"))


def snapshot(cohort: dict) -> dict:
    """Every input file of the cohort with its size and modification time."""
    root = Path(cohort["data_directory"]).parent
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def site_paths(cohort: dict) -> dict:
    """config/site.yaml as the README says to fill it: the three paths of the site's copy (the
    nIDPs as a FUNPACK table)."""
    return {"cohort": {k: str(cohort[k]) for k in ("data_directory", "nidps", "confounds")}}


def rehearsal_site(cohort: dict) -> dict:
    """The README's rehearsal: the same site file with a few subjects, contrasts and epochs."""
    site = site_paths(cohort)
    site["cohort"]["subjects"] = str(cohort["subjects"])
    site["cohort"]["excluded"] = None
    site.update(
        contrasts=rehearsal.CONTRASTS,
        preprocess={"grid": [32, 40, 32]},
        model={"channels": [4, 8, 8, 8, 8]},
        training={"epochs": 2},
        associations={"groups": ["pooled"], "min_subjects": 5},
        runtime={"device": "cpu"},
    )
    return site


def write_site(clone: Path, site: dict) -> None:
    (clone / "config/site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))


@pytest.mark.workflow
def test_study_commands_run_as_written(tmp_path, cohort):
    clone = fresh_clone(tmp_path / "study")
    write_site(clone, site_paths(cohort))
    inputs_before = snapshot(cohort)

    # at full size: the plan of 342 networks, in seconds, no demo job, the cluster resources
    start = time.monotonic()
    res = shell("snakemake --profile slurm -n results/deltas/all.csv", clone)
    seconds = time.monotonic() - start
    assert res.returncode == 0, res.output[-4000:]
    assert "Using profile slurm " in res.output
    counts = job_counts(res.output)
    # one job per source file, sex and cache: the 25 rsfMRI maps share their 4D file's job
    assert counts["preprocess_contrast"] == 32 * 2 * 3
    assert counts["preprocess_rsfmri"] == 2 * 3
    assert counts["train_networks"] == 57 * 2  # each trains 3 replicates: 342 networks
    assert counts["predict_brain_age"] == 57 * 2
    assert not {"generate_cohort", "evaluate_synthetic"} & set(counts)
    assert seconds < 10, f"planning the study took {seconds:.1f} s"
    jobs = planned_jobs(res.stdout)
    for job in jobs:
        assert (job.get("gpu") == "1") == (job["rule"] in {"train_networks", "predict_brain_age"})
    train = next(j for j in jobs if j["rule"] == "train_networks")
    assert (train["threads"], train["mem_mb"], train["runtime"]) == (8, "16000", "1440")
    groups = re.findall(r"Group job (\w+)", res.stdout)
    assert (groups.count("preprocess"), groups.count("predict")) == (33, 19)

    full = {}
    for command in CLUSTER:
        res = shell(dry(command), clone)
        assert res.returncode == 0, f"{command}\n{res.output[-4000:]}"
        full[command] = job_counts(res.output)
    assert full[CLUSTER[0]]["train_networks"] == 114
    assert full[CLUSTER[1]]["associate_nidps"] == 1
    assert full[CLUSTER[3]]["generate_cohort"] == 1  # the demo, on the cluster
    assert full[CLUSTER[4]]["train_networks"] == 4  # two contrasts x two sexes
    assert full[CLUSTER[5]] == {**full[CLUSTER[5]], "train_networks": 1, "predict_brain_age": 1}
    assert not (clone / "results/run.json").exists()  # dry runs claim nothing

    # lint is clean for the study config as well as the demo's
    res = shell("snakemake --lint --configfile config/ukb.yaml config/site.yaml", clone)
    assert res.returncode == 0, res.output[-3000:]

    # a config that lacks a required key is refused, naming it (nothing filled from the demo)
    (clone / "config/site.yaml").write_text("cohort: {nidps: x.tsv}\n")
    res = shell(STUDY_LOCAL, clone)
    assert res.returncode != 0 and "cohort.data_directory" in res.output
    assert "Traceback" not in res.output

    # the rehearsal: the README's local command, for real, on a few subjects and contrasts
    write_site(clone, rehearsal_site(cohort))
    res = shell(STUDY_LOCAL, clone, timeout=1800)
    assert res.returncode == 0, res.output[-6000:]
    assert not {"generate_cohort", "evaluate_synthetic"} & set(job_counts(res.output))
    res = shell(STUDY_ASSOC, clone)
    assert res.returncode == 0, res.output[-4000:]
    results = clone / "results"
    deltas = pd.read_csv(results / "deltas/all.csv", dtype={"subject": str})
    assert set(rehearsal.CONTRASTS) <= set(deltas.contrast)
    assert deltas[["predicted", "delta_corrected"]].notna().all().all()
    assert (results / "associations/significant.tsv").exists()
    assert not list((results / "cache").glob("*/*.cache"))

    # the README's other way: the main dataset as downloaded instead of a FUNPACK table; the
    # same command now runs FUNPACK on it first, and nothing upstream of the associations
    site = rehearsal_site(cohort)
    site["cohort"].update(
        nidps=str(cohort["ukb_main"]),
        nidps_format="ukb_main",
        nidp_fields=str(cohort["nidp_fields"]),
    )
    write_site(clone, site)
    res = shell(STUDY_ASSOC, clone)
    assert res.returncode == 0, res.output[-4000:]
    counts = job_counts(res.output)
    assert counts["extract_nidps"] == 1 and counts["associate_nidps"] == 1, counts
    assert not {"train_networks", "predict_brain_age", "correct_deltas"} & set(counts)
    table = pd.read_csv(results / "associations/all.tsv", sep="\t")
    assert "Vascular/heart problems diagnosed by doctor: High blood pressure" in set(table.title)
    assert not table.title.str.contains(" = ").any()
    assert not table.nidp.str.match(r"^(?!6150-)\d+-0\.").any()  # the imaging visit only
    assert snapshot(cohort) == inputs_before  # no input written, touched or deleted

    # the cluster commands again, now that the rehearsal's networks exist: reruns plan only
    # what they say
    # (not those naming contrasts the rehearsal left out)
    after = {}
    for command in [c for c in CLUSTER if c not in CLUSTER[3:6]]:
        res = shell(dry(command), clone)
        assert res.returncode == 0, f"{command}\n{res.output[-4000:]}"
        after[command] = (job_counts(res.output), res.output)
    for command in CLUSTER[:3] + CLUSTER[7:8]:
        assert "Nothing to be done" in after[command][1], command
    forced, _ = after[FORCE_TWO]
    assert forced["train_networks"] == 2 and forced["predict_brain_age"] == 2
    assert forced["preprocess_contrast"] == 2 * 3  # the temporary caches of those two only
    assert after[CLUSTER[9]][0] == {"correct_deltas": 1, "total": 1}
    assert "train_networks" not in after[FORCE_PREDICT][0]
    assert after[FORCE_PREDICT][0]["predict_brain_age"] == 6

    # ... and run for real, locally (the README: the same recipes with -c4 and the configs):
    # the caches are long gone, prediction rebuilds its own, the networks stay as they were
    weights = sorted((clone / "results/models").rglob("model.safetensors"))
    before = {w: hashlib.sha256(w.read_bytes()).hexdigest() for w in weights}
    predicted = clone / "results/predictions/T1_nonlinear/female.tsv"
    stamp = predicted.stat().st_mtime_ns
    local = FORCE_PREDICT.replace("--profile slurm", "-c4").replace(
        "--forcerun", "--configfile config/ukb.yaml config/site.yaml --forcerun"
    )
    res = shell(local, clone, timeout=1800)
    assert res.returncode == 0, res.output[-4000:]
    assert "train_networks" not in job_counts(res.output)
    assert {w: hashlib.sha256(w.read_bytes()).hexdigest() for w in weights} == before
    assert predicted.stat().st_mtime_ns != stamp
    # the demo in the study's results folder is refused before it writes anything
    for command in (CLUSTER[3], "snakemake -c2 all"):
        res = shell(dry(command), clone)
        assert res.returncode != 0 and "Refusing to mix them" in res.output, command
        assert "--profile slurm" in res.output and "Traceback" not in res.output

    _apply_runs_as_written(tmp_path, clone, cohort)

    # the rehearsal's networks in the original release's names, and back: same predictions
    res = shell(EXPORT, clone)
    assert res.returncode == 0, res.output[-3000:]
    exported = sorted(p.name for p in (clone / "exported").glob("*.pth.tar"))
    assert len(exported) == len(rehearsal.CONTRASTS) * 2 * 3
    assert "T1_nonlinear_female_1.pth.tar" in exported
    res = shell("agemapper import-original exported reimported", clone)
    assert res.returncode == 0, res.output[-3000:]
    from agemapper.networks.training import load_model

    x = torch.randn(2, 1, 32, 40, 32, generator=torch.Generator().manual_seed(0))
    for path in sorted((clone / "results/models").rglob("model.safetensors"))[:4]:
        back = clone / "reimported" / path.relative_to(clone / "results/models")
        with torch.no_grad():
            assert torch.equal(load_model(path)[0](x), load_model(back)[0](x)), path


def _apply_runs_as_written(tmp_path: Path, trained: Path, cohort: dict) -> None:
    """The README's apply command, in a clone of its own, on the rehearsal's networks."""
    clone = fresh_clone(tmp_path / "apply")
    write_site(clone, rehearsal_site(cohort))  # the configs the networks were trained with
    subjects = pd.read_csv(trained / "results/qc/subjects.tsv", sep="\t", dtype=str)
    new = subjects[subjects.split == "test"]
    new.to_csv(tmp_path / "new_subjects.tsv", sep="\t", index=False)
    apply = yaml.safe_load((clone / "config/apply.yaml").read_text())
    apply["apply"]["results"] = str(trained / "results")
    apply["cohort"] = {
        "subjects": str(tmp_path / "new_subjects.tsv"),
        "data_directory": str(cohort["data_directory"]),
        "nidps": str(cohort["nidps"]),
        "confounds": str(cohort["confounds"]),
    }
    (clone / "config/apply.yaml").write_text(yaml.safe_dump(apply))
    res = shell(APPLY, clone)
    assert res.returncode == 0, res.output[-5000:]
    assert "train_networks" not in job_counts(res.output)
    got = pd.read_csv(clone / "results/deltas/all.csv", dtype={"subject": str})
    ref = pd.read_csv(trained / "results/deltas/all.csv", dtype={"subject": str})
    ref = ref[ref.split == "test"]
    merged = ref.merge(got, on=["subject", "contrast"], suffixes=("", "_applied"))
    assert len(merged) == len(ref) == len(got)
    # The same networks predict a subject in another batch to float32 precision (about 3e-8
    # here: CPU convolutions round by batch size); an ensemble multiplies that by the sum of
    # its |weights|, which the rehearsal's barely trained networks (outputs near 0) make ~1e6.
    weights = pd.read_csv(trained / "results/ensembles/weights.tsv", sep="\t")
    weights = weights[weights.term != "(intercept)"]
    scale = weights.assign(w=weights.weight.abs()).groupby(["ensemble", "sex"]).w.sum()
    gain = [scale.get((c, s), 1.0) for c, s in zip(merged.contrast, merged.sex, strict=True)]
    tolerance = 1e-6 + 1e-7 * pd.Series(gain, index=merged.index)
    for col in ("predicted", "delta", "delta_corrected"):
        error = (merged[col] - merged[f"{col}_applied"]).abs()
        assert (error < tolerance).all(), (col, merged.loc[error >= tolerance, "contrast"])
        single = ~merged.contrast.str.startswith("ensemble_")
        assert error[single].max() < 1e-6, col

    # a network is refused when its input contract does not match what it is asked to do
    # (x1.2: within the intensity check's x1.5, which would stop a larger change earlier)
    table = pd.read_csv(clone / "config/contrasts.tsv", sep="\t")
    table.loc[table.contrast == "tbss_FA_s", "scale_factor"] *= 1.2
    table.to_csv(clone / "config/contrasts.tsv", sep="\t", index=False)
    shutil.rmtree(clone / "results/predictions")
    res = shell(APPLY, clone)
    assert res.returncode != 0
    # whichever sex's prediction runs first stops the run: its log and the console say why
    logs = (clone / "results/logs/predict_brain_age").glob("tbss_FA_s_*.log")
    refused = [p for p in logs if "does not match its input" in p.read_text()]
    assert refused and "scale_factor" in refused[0].read_text(), res.output[-3000:]
    assert "does not match its input" in res.output and "Traceback" not in res.output

    # a new cohort at twice the intensities of the networks' training inputs is caught before
    # any prediction: the networks carry the statistics of their training split
    table.loc[table.contrast == "tbss_FA_s", "scale_factor"] /= 2
    table.to_csv(clone / "config/contrasts.tsv", sep="\t", index=False)
    shifted = tmp_path / "shifted"
    data_file = table.set_index("contrast").loc["tbss_FA_s", "data_file"]
    for subject in new.subject:
        img = nib.load(Path(cohort["data_directory"]) / subject / data_file)
        (shifted / subject / data_file).parent.mkdir(parents=True, exist_ok=True)
        doubled = np.asarray(img.dataobj, dtype=np.float32) * 2
        nib.save(nib.Nifti1Image(doubled, img.affine, img.header), shifted / subject / data_file)
    apply["cohort"]["data_directory"] = str(shifted)
    apply["contrasts"] = ["tbss_FA_s"]
    (clone / "config/apply.yaml").write_text(yaml.safe_dump(apply))
    shutil.rmtree(clone / "results")
    res = shell(APPLY, clone)
    assert res.returncode != 0
    assert not (clone / "results/predictions").exists()
    log = (clone / "results/logs/preprocess_contrast/tbss_FA_s_female_predict.log").read_text()
    assert "contrast tbss_FA_s" in log and "median |intensity| after scaling" in log
    assert "the median over its" in log and "training split's" in log, log[-2000:]


# ------------------------------------------------------------------------ pretrained mode


def _hashes(folder: Path) -> dict:
    return {
        p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.workflow
def test_pretrained_commands_run_as_written(tmp_path, cohort):
    """The README's pretrained mode: the original release's networks (written by the
    original's own class and save calls, every file format) imported, then a cohort's brain
    ages with bias corrections and ensembles fitted on its calibration subjects."""
    from test_legacy import write_release

    clone = fresh_clone(tmp_path / "pretrained")
    contrasts = ["T1_nonlinear", "rsfmri_3"]  # 1 mm mean-normalised; 2 mm, 4D (CPU time)
    originals = write_release(
        clone / "original_networks", contrasts, ("female", "male"), (1, 2, 3), ages=True
    )
    res = shell(IMPORT_RELEASE, clone)
    assert res.returncode == 0, res.output[-3000:]
    assert f"{len(originals)} networks imported" in res.output
    imported = _hashes(clone / "networks")
    formats = pd.read_csv(clone / "networks/manifest.tsv", sep="\t").format
    assert set(formats) == {"state_dict", "checkpoint", "whole_model"}

    # the user's cohort: calibration subjects (the rehearsal's validation split) and a few to
    # predict (split test)
    from agemapper.images.subjects import read_subjects

    subjects = read_subjects(cohort["subjects"])
    test = subjects[subjects.split == "test"].groupby("sex").head(4)
    mine = pd.concat([subjects[subjects.split == "validation"], test])
    mine.to_csv(tmp_path / "my_subjects.tsv", sep="\t", index=False)
    # config/site.yaml: contrasts and CPU; the original's networks need the full 160x192x160
    # grid (config/ukb.yaml's), not the rehearsal's small one
    site = rehearsal_site(cohort)
    site.update(contrasts=contrasts, preprocess={"grid": [160, 192, 160]})
    write_site(clone, site)
    # config/pretrained.yaml: the cohort's paths, as the README says to edit them
    pretrained = yaml.safe_load((clone / "config/pretrained.yaml").read_text())
    pretrained["cohort"] = {k: str(cohort[k]) for k in ("data_directory", "nidps", "confounds")}
    pretrained["cohort"]["subjects"] = str(tmp_path / "my_subjects.tsv")
    (clone / "config/pretrained.yaml").write_text(yaml.safe_dump(pretrained))

    res = shell(PRETRAINED + " -n", clone)
    assert res.returncode == 0, res.output[-4000:]
    counts = job_counts(res.output)
    assert "train_networks" not in counts and counts["predict_brain_age"] == 4
    assert counts["preprocess_contrast"] == 4  # one cache per contrast and sex: calibration + test
    n = len(originals)
    assert f"apply mode: {n} networks from networks predict, none is trained" in res.output
    assert f"they are read only, never written ({n} imported" in res.output
    assert "WARNING: fewer than 100 calibration subjects (female, male)" in res.output

    res = shell(PRETRAINED, clone, timeout=1800)
    assert res.returncode == 0, res.output[-6000:]
    assert "train_networks" not in job_counts(res.output)
    results = clone / "results"
    deltas = pd.read_csv(results / "deltas/all.csv", dtype={"subject": str})
    ensembles = {f"ensemble_{m}" for m in ("mean", "linear", "elastic_net")}
    assert set(deltas.contrast) == set(contrasts) | ensembles
    assert set(deltas.split) == {"validation", "test"} and len(deltas) == len(mine) * 5
    assert deltas[["predicted", "delta_corrected"]].notna().all().all()
    corrections = pd.read_csv(results / "deltas/corrections.tsv", sep="\t")
    assert len(corrections) == len(set(deltas.contrast)) * 2
    metrics = pd.read_csv(results / "deltas/metrics.tsv", sep="\t")
    fitted = metrics[metrics.split == "validation"]  # the correction was fitted there
    assert (fitted.r_delta_corrected_age.abs() < 1e-6).all(), fitted
    assert (results / "ensembles/weights.tsv").exists()
    scale = pd.read_csv(results / "qc/scale_factors.tsv", sep="\t")  # estimated from the cohort
    assert set(scale.contrast) == set(contrasts) and (scale.subjects == len(mine)).all()
    log = (results / "logs/correct_deltas/correct_deltas.log").read_text()
    assert "bias correction fitted on 6 validation subjects, fewer than 100" in log

    # the replicate mean is the original networks' own mean prediction on the same input
    preds = pd.read_csv(results / "predictions/T1_nonlinear/female.tsv", sep="\t")
    reps = [c for c in preds.columns if c.startswith("replicate_")]
    assert len(reps) == 3 and np.allclose(preds[reps].mean(axis=1), preds.predicted)
    assert preds[reps].std(axis=1).min() > 0  # three different networks
    assert preds.predicted.std() > 0.1  # ... whose predictions vary from subject to subject

    assert _hashes(clone / "networks") == imported  # never modified
    # a training run in this clone with the imported networks moved into results/models
    shutil.copytree(clone / "networks", results / "models", dirs_exist_ok=True)
    res = shell(STUDY_LOCAL + " -n", clone)
    assert res.returncode != 0 and "imported by agemapper import-original" in res.output
    assert "never retrained" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------------ the rest


def test_original_network_import_runs_as_written(tmp_path):
    from test_legacy import _original_state_dict

    clone = fresh_clone(tmp_path / "import")
    torch.save({"state_dict": _original_state_dict(), "epoch": 97}, clone / "ORIGINAL.pth.tar")
    res = shell(LEGACY, clone)
    assert res.returncode == 0, res.output[-3000:]
    out = clone / "networks/T1_nonlinear/female/replicate-1/model.safetensors"
    assert out.stat().st_size > 5_000_000  # 1.3 M float32 parameters
    manifest = json.loads((out.parent / "manifest.json").read_text())
    assert manifest["source"]["format"] == "checkpoint" and manifest["sex"] == "female"
    for command in HELP:
        res = shell(command, clone)
        assert res.returncode == 0 and "usage: agemapper" in res.output, res.output[-2000:]


@pytest.mark.parametrize("command", BENCHMARKS[:-1])
def test_benchmark_commands_run_in_smoke_mode(tmp_path, command):
    script = REPO / command.split()[1]
    flag = "--small" if "--small" in script.read_text() else "--tiny"
    clone = fresh_clone(tmp_path / "bench")
    res = shell(f"{command} {flag}", clone, timeout=600)
    assert res.returncode == 0, res.output[-3000:]
