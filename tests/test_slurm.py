"""The workflow on SLURM through the repository's profile, as users run it:
``snakemake --profile slurm results/deltas/all.csv`` from the repository root.

The full study's plan through the profile is checked without a cluster (tests/test_readme.py).
These tests start a real single-node cluster
(slurmctld, slurmd, slurmdbd with MariaDB, MUNGE; tests/slurm_cluster.py) for the session and
submit every job with sbatch; nothing is mocked. A site profile scales the jobs down to the
test node, as a cluster's users would for theirs (``--workflow-profile`` overrides ``slurm/``).
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from slurm_cluster import ClusterUnavailable, SlurmCluster, install, missing_programs
from test_workflow import _tiny_config

from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
CONTRASTS = ["T1_nonlinear", "rsfmri_0"]
GPU_RULES = {"train_networks", "predict_brain_age"}
LOCAL_RULES = {
    "check_subjects",
    "check_scale_factors",
    "combine_contrasts",
    "correct_deltas",
    "associate_nidps",
    "summarise_qc",
    "evaluate_synthetic",
    "plot_brain_age",
    "plot_associations",
    "plot_training_curves",
}
ENSEMBLES = ["ensemble_mean", "ensemble_linear", "ensemble_elastic_net"]


def _snakemake(args, env=None, timeout=900):
    """Snakemake from the repository root, so that ``--profile slurm`` means ``slurm/``."""
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(
        [*SNAKEMAKE, "--profile", "slurm", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    res.output = res.stdout + res.stderr
    return res


# ----------------------------------------------------------------------------- cluster


def _unavailable(reason: str):
    if os.environ.get("AGEMAPPER_REQUIRE_SLURM") == "1":  # set by .ci/run: never skip there
        pytest.fail(f"SLURM test cluster unavailable: {reason}")
    pytest.skip(f"SLURM test cluster unavailable: {reason}")


@pytest.fixture(scope="session")
def cluster():
    if not sys.platform.startswith("linux"):
        _unavailable("needs Linux")
    if missing_programs():
        try:
            install()
        except ClusterUnavailable as exc:
            _unavailable(str(exc))
    slurm = SlurmCluster()
    try:
        slurm.start()  # on failure it stops what it started and says why, with the daemons' logs
    except ClusterUnavailable as exc:
        slurm.cleanup()
        _unavailable(str(exc))
    except Exception:
        slurm.cleanup()
        raise
    try:
        yield slurm
    finally:
        slurm.stop()
        slurm.cleanup()


def _site_profile(root: Path, slurm: SlurmCluster, **extra) -> Path:
    """A workflow profile fitting the jobs to the test node (2 CPUs, 2 fake GPUs)."""
    cpus = min(2, slurm.cpus)
    profile = {
        "cores": cpus,
        "retries": 0,  # a failing job fails the test at once
        "set-threads": {
            "generate_cohort": cpus,
            "preprocess_contrast": 1,
            "train_networks": 1,
            "predict_brain_age": 1,
        },
        "set-resources": {
            "generate_cohort": {"mem_mb": 1500},
            "preprocess_contrast": {"mem_mb": 500},
            "train_networks": {"mem_mb": 1500},
            "predict_brain_age": {"mem_mb": 1000},
        },
        # poll SLURM soon after each submission (the plugin's default first wait is 40 s)
        "slurm-init-seconds-before-status-checks": 1,
        "seconds-between-status-checks": 1,
        "slurm-keep-successful-logs": True,
        **extra,
    }
    folder = root / "site-profile"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def _accounting(slurm: SlurmCluster, output: str) -> pd.DataFrame:
    """This run's jobs as SLURM's accounting (slurmdbd) records them."""
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    since = datetime.now() - timedelta(days=1)  # sacct's default window starts at midnight
    text = slurm.run(
        "sacct",
        "-X",
        "--parsable2",
        f"--starttime={since:%Y-%m-%dT%H:%M}",
        "--name",
        run_id,
        "--format=JobIDRaw,Comment,State,AllocTRES,Timelimit,Submit,Start,End",
    )
    rows = [line.split("|") for line in text.strip().splitlines()]
    return pd.DataFrame(rows[1:], columns=rows[0]).astype({"JobIDRaw": int})


def _slurm_job_in_log(path: Path) -> list[int]:
    """The SLURM job ids the log's opening line names (agemapper.runner.log_to writes it)."""
    return [int(j) for j in re.findall(r" agemapper: SLURM job (\d+) on ", path.read_text())]


@pytest.fixture(scope="module")
def demo(cluster, tmp_path_factory):
    """The demo through SLURM at tiny size: the issue's command, run once for the tests below."""
    root = tmp_path_factory.mktemp("slurm-demo")
    cfg = yaml.safe_load(_tiny_config(root).read_text())
    cfg["contrasts"] = CONTRASTS
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    workdir = root / "run"
    args = [
        "--workflow-profile",
        str(_site_profile(root, cluster)),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
    ]
    start = time.monotonic()
    res = _snakemake([*args, "--", "results/deltas/all.csv"], env=cluster.env)
    seconds = time.monotonic() - start
    print(f"demo through SLURM: {seconds:.0f} s")
    yield SimpleNamespace(
        root=root, workdir=workdir, config=cfg, args=args, res=res, seconds=seconds
    )
    shutil.rmtree(workdir / "results/synthetic/subjectsAll", ignore_errors=True)


@pytest.mark.slurm
def test_demo_runs_through_slurm(cluster, demo):
    res = demo.res
    assert res.returncode == 0, res.output[-6000:] + "\n" + cluster.logs()
    results = demo.workdir / "results"
    deltas = pd.read_csv(results / "deltas/all.csv", dtype={"subject": str})
    assert set(deltas.contrast) == set(CONTRASTS + ENSEMBLES)
    assert len(deltas) == (len(CONTRASTS) + len(ENSEMBLES)) * 2 * (4 + 20)

    # Every job but the local aggregation went through sbatch, and SLURM accounted for it.
    submitted = {int(j) for j in re.findall(r"submitted with SLURM jobid (\d+)", res.output)}
    jobs = _accounting(cluster, res.output)
    print(jobs.to_string())
    assert set(jobs.JobIDRaw) == submitted
    assert (jobs.State == "COMPLETED").all(), jobs
    # grouped: 1 cohort + 2 preprocessing groups (12 jobs) + 4 trainings + 1 prediction group
    assert len(submitted) == 8, jobs
    comment = dict(zip(jobs.JobIDRaw, jobs.Comment, strict=True))
    for _, job in jobs.iterrows():  # GPUs for the networks, none for CPU stages
        assert ("gres/gpu=1" in job.AllocTRES) == any(r in job.Comment for r in GPU_RULES), job

    # Each rule's log names the SLURM job that wrote it; that job ran that rule.
    logs = sorted((results / "logs").glob("*/*.log"))
    assert {p.parent.name for p in logs} == {
        "check_subjects",
        "generate_cohort",
        "preprocess_contrast",
        "train_networks",
        "predict_brain_age",
        "combine_contrasts",
        "correct_deltas",
    }
    for log in logs:
        ids = _slurm_job_in_log(log)
        if log.parent.name in LOCAL_RULES:
            assert ids == [], log
        else:
            assert len(ids) == 1 and ids[0] in submitted, log
            assert log.parent.name in comment[ids[0]], (log, comment[ids[0]])
    assert "localrule correct_deltas:" in res.output
    # the executor's own SLURM logs, one per job, kept by the site profile
    slurm_logs = {int(p.stem) for p in (demo.workdir / ".snakemake/slurm_logs").rglob("*.log")}
    assert slurm_logs == submitted

    again = _snakemake(["-n", *demo.args, "--", "results/deltas/all.csv"], env=cluster.env)
    assert again.returncode == 0, again.output[-3000:]
    assert "Nothing to be done" in again.output


def _epochs_lasting(seconds: float, model: dict, training: dict, grid, n_train, n_val) -> int:
    """Epochs that keep this machine's CPU busy for about ``seconds`` (timed in-process)."""
    import tempfile

    from agemapper.networks.training import Trainer
    from conftest import make_cache

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train, _ = make_cache(tmp, "train", n_train, shape=tuple(grid), seed=1)
        val, _ = make_cache(tmp, "val", n_val, shape=tuple(grid), seed=2)
        probe = {**training, "epochs": 4, "early_stopping_patience": 100}
        trainer = Trainer(
            train, val, model, probe, [1, 2], ("probe",), tmp / "ck", device="cpu", threads=1
        )
        trainer.run()
    per_epoch = min(h["seconds"] for h in trainer.reps[0].history[1:])  # the fastest epoch
    return max(20, math.ceil(seconds / per_epoch))


def _running_training_job(slurm: SlurmCluster, checkpoint: Path, proc, deadline: float) -> int:
    """The SLURM job training T1_nonlinear/female, once its first epoch is checkpointed."""
    while time.monotonic() < deadline and proc.poll() is None:
        queue = slurm.run("squeue", "-h", "-t", "R", "-o", "%i|%k")
        ids = [int(i) for i, c in (r.split("|", 1) for r in queue.split()) if "train_net" in c]
        if ids and checkpoint.exists():
            return ids[0]
        time.sleep(0.5)
    raise AssertionError("the training job never checkpointed an epoch")


@pytest.mark.slurm
def test_training_stopped_at_its_time_limit_resumes_with_more_time(cluster, demo, tmp_path):
    """A training job outgrows its 1-minute limit: SLURM sends SIGTERM, the trainer writes its
    checkpoint and fails; the retry gets 10 minutes and finishes from the checkpoint.

    The limit is lowered to 1 minute (``scontrol update``, as root) once the job has trained an
    epoch, so that a slow job start on a busy machine cannot use up the minute before training
    begins; SLURM then enforces it as it would have from the start.
    """
    if demo.res.returncode != 0:
        pytest.skip("the demo run failed (see test_demo_runs_through_slurm)")
    workdir = tmp_path / "run"  # the demo's cohort and state, so only this network is redone
    shutil.copytree(demo.workdir, workdir, ignore=shutil.ignore_patterns("slurm_logs"))
    cfg = copy.deepcopy(demo.config)
    cfg["model"]["channels"] = [16, 32, 32, 32, 32]
    n = cfg["synthetic"]["subjects_per_sex"]
    # Long enough to outlive the limit (SLURM enforces it 60-90 s after the job's start) wherever
    # the test runs, short enough for the retry to finish soon after: 120 s of the fastest probe
    # epochs, plus evaluation and checkpoints each epoch.
    epochs = _epochs_lasting(
        120, cfg["model"], cfg["training"], cfg["preprocess"]["grid"], n["train"], n["validation"]
    )
    # no stuck-replicate restarts: they would add attempts to metrics.tsv and time to the job
    no_restarts = {"max_restarts": 0}
    cfg["training"].update(epochs=epochs, early_stopping_patience=epochs, restart_stuck=no_restarts)
    config = tmp_path / "longer.yaml"
    config.write_text(yaml.safe_dump(cfg))
    profile = _site_profile(tmp_path, cluster, retries=1)
    site = yaml.safe_load((profile / "config.yaml").read_text())
    site["set-resources"]["train_networks"]["runtime"] = "5 if attempt == 1 else 10"
    (profile / "config.yaml").write_text(yaml.safe_dump(site))
    targets = [f"results/models/T1_nonlinear/female/replicate-{r}/metrics.tsv" for r in (1, 2)]
    args = ["--workflow-profile", str(profile), "--directory", str(workdir)]
    checkpoint = workdir / "results/checkpoints/T1_nonlinear/female/checkpoint.safetensors"
    start = time.monotonic()
    with (tmp_path / "snakemake.out").open("w+") as out:
        proc = subprocess.Popen(
            [*SNAKEMAKE, "--profile", "slurm", *args, "--configfile", str(config), "--", *targets],
            cwd=REPO,
            env={**cluster.env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            job = _running_training_job(cluster, checkpoint, proc, start + 600)
            cluster.run("scontrol", "update", f"JobId={job}", "TimeLimit=1")
            proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
        out.seek(0)
        output = out.read()
    seconds = time.monotonic() - start
    shutil.rmtree(workdir / "results/synthetic/subjectsAll", ignore_errors=True)
    assert proc.returncode == 0, output[-6000:] + "\n" + cluster.logs()

    jobs = _accounting(cluster, output)
    print(f"{epochs} epochs; timed-out training through SLURM: {seconds:.0f} s\n{jobs.to_string()}")
    train = jobs[jobs.Comment.str.contains("train_networks")].sort_values("JobIDRaw")
    assert list(train.State) == ["TIMEOUT", "COMPLETED"], jobs
    assert list(train.Timelimit) == ["00:01:00", "00:10:00"], jobs
    first, second = train.JobIDRaw
    assert first == job
    log = workdir / "results/logs/train_networks/T1_nonlinear_female.log"
    text = log.read_text()
    # The scheduler replaced the rule's log; the first job's own output tells why it stopped.
    first_log = "\n".join(
        p.read_text() for p in (workdir / ".snakemake/slurm_logs").rglob(f"{first}.log")
    )
    text_and_first = f"{text}\n--- SLURM job {first}:\n{first_log[-4000:]}"
    assert _slurm_job_in_log(log) == [second], text_and_first
    assert "resumed from results/checkpoints/T1_nonlinear/female/checkpoint.safetensors" in text, (
        text_and_first
    )
    assert f"(saved on signal 15 in SLURM job {first} on " in text, text_and_first  # SIGTERM
    metrics = pd.read_csv(
        workdir / "results/models/T1_nonlinear/female/replicate-1/metrics.tsv", sep="\t"
    )
    assert list(metrics.epoch) == list(range(1, epochs + 1))
    assert not checkpoint.exists()


@pytest.mark.slurm
def test_readme_slurm_tool_runs(cluster):
    """The SLURM command README.md shows (before --unlock: is a job of the old run queued?)."""
    res = subprocess.run(
        ["bash", "-c", "squeue --me"], env=cluster.env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert "JOBID" in res.stdout
