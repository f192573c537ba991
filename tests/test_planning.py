"""Config problems planning can see are errors before any job, naming the key."""

from __future__ import annotations

import json

import pytest
import yaml

from agemapper import planning
from agemapper.errors import ConfigError
from conftest import REPO


@pytest.fixture
def study(tmp_path, monkeypatch):
    """config/ukb.yaml with a site's paths that exist (a data folder, nIDP and confound tables)."""
    monkeypatch.chdir(REPO)
    (tmp_path / "data").mkdir()
    (tmp_path / "nidps.tsv").write_text("eid\t21001-2.0\n1\t25\n")
    (tmp_path / "confounds.tsv").write_text("eid\tsite\thead_size\tmotion\n1\t11025\t1.0\t0.1\n")
    cfg = yaml.safe_load((REPO / "config/ukb.yaml").read_text())
    cfg["cohort"].update(
        data_directory=str(tmp_path / "data"),
        nidps=str(tmp_path / "nidps.tsv"),
        confounds=str(tmp_path / "confounds.tsv"),
    )
    return cfg


def test_the_study_with_its_site_paths_passes(study):
    planning.check_required(study)
    planning.check_config(study)


@pytest.mark.parametrize("key", ["data_directory", "nidps", "confounds"])
def test_a_missing_cohort_key_says_where_to_set_it(study, key):
    del study["cohort"][key]
    with pytest.raises(ConfigError, match=rf"cohort\.{key} is missing: set it in config/site"):
        planning.check_required(study)


@pytest.mark.parametrize(
    ("key", "value"),
    [("data_directory", "/no/such/folder"), ("nidps", "/no/nidps.tsv"), ("subjects", "/no/s.tsv")],
)
def test_a_path_that_does_not_exist_is_named(study, key, value):
    study["cohort"][key] = value
    with pytest.raises(ConfigError, match=rf"cohort\.{key} {value} does not exist"):
        planning.check_config(study)


def test_a_file_given_as_the_data_directory(study, tmp_path):
    study["cohort"]["data_directory"] = study["cohort"]["nidps"]
    with pytest.raises(ConfigError, match="is not a folder"):
        planning.check_config(study)


def test_a_confound_name_typo_is_caught_at_planning(study):
    study["associations"]["confounds"] = ["site", "head_sise", "motion"]
    with pytest.raises(ConfigError, match=r"associations\.confounds names \['head_sise'\]"):
        planning.check_config(study)


def test_a_categorical_confound_must_be_a_confound(study):
    study["associations"]["confounds"] = ["head_size", "motion"]
    with pytest.raises(ConfigError, match="categorical_confounds"):
        planning.check_config(study)


def test_replication_without_test_halves_is_caught_at_planning(study):
    study["cohort"]["subjects"] = "datasets/ukb_subjects_small.tsv"  # no halves A and B
    with pytest.raises(ConfigError, match="no halves A and B"):
        planning.check_config(study)
    study["associations"]["replication"] = False
    planning.check_config(study)


def test_generated_tables_are_not_checked(study, tmp_path):
    study["cohort"]["nidps"] = str(tmp_path / "made-by-a-job.tsv")
    planning.check_config(study, generated=[study["cohort"]["nidps"]])


def test_one_results_folder_holds_one_cohort(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = {"cohort": {"data_directory": "results/synthetic/subjectsAll", "subjects": "s.tsv"}}
    study = {"cohort": {"data_directory": "/ukb/subjectsAll", "subjects": "ukb.tsv"}}
    planning.claim_results("results", planning.cohort_identity(study, "study"), write=False)
    assert not (tmp_path / "results/run.json").exists()  # a dry run claims nothing
    planning.claim_results("results", planning.cohort_identity(study, "study"), write=True)
    recorded = json.loads((tmp_path / "results/run.json").read_text())["cohort"]
    assert recorded == {
        "mode": "study",
        "data_directory": "/ukb/subjectsAll",
        "subjects": "ukb.tsv",
    }
    planning.claim_results("results", planning.cohort_identity(study, "study"), write=True)
    with pytest.raises(ConfigError, match="Refusing to mix them.*--profile slurm"):
        planning.claim_results("results", planning.cohort_identity(demo, "demo"), write=False)
