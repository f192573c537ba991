"""Config problems planning can see are errors before any job, naming the key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rehearsal
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


@pytest.fixture
def raw_study(study, tmp_path):
    """The study given the UK Biobank main dataset (two CSVs) and a field list, not a table."""
    (tmp_path / "ukb1.csv").write_text('"eid","31-0.0","20116-0.0","20116-2.0"\n"1","0","1",""\n')
    (tmp_path / "ukb2.csv").write_text("eid,p6150_i2_a0,p6150_i2_a1\n1,4,\n")
    (tmp_path / "fields.txt").write_text("20116  # smoking status\n6150\n")
    study["cohort"].update(
        nidps=[str(tmp_path / "ukb1.csv"), str(tmp_path / "ukb2.csv")],
        nidps_format="ukb_main",
        nidp_fields=str(tmp_path / "fields.txt"),
    )
    return study


def test_the_main_dataset_and_a_field_list_pass(raw_study):
    planning.check_config(raw_study)
    del raw_study["cohort"]["nidp_fields"]  # FMRIB's recommended categories
    planning.check_config(raw_study)


def test_the_main_dataset_is_checked_at_planning(raw_study, tmp_path):
    (tmp_path / "ukb2.csv").write_text("eid\t6150-2.0\n1\t4\n")
    with pytest.raises(ConfigError, match=r"cohort\.nidps .*ukb2\.csv: .*tab-separated"):
        planning.check_config(raw_study)
    (tmp_path / "ukb2.csv").write_text("eid,age,bmi\n1,60,25\n")
    with pytest.raises(ConfigError, match="ukb2.csv: no column in the showcase layout"):
        planning.check_config(raw_study)
    raw_study["cohort"]["nidps"] = [str(tmp_path / "ukb1.csv"), str(tmp_path / "none.csv")]
    with pytest.raises(ConfigError, match=r"cohort\.nidps .*none\.csv does not exist"):
        planning.check_config(raw_study)


def test_the_field_list_is_checked_at_planning(raw_study, tmp_path):
    (tmp_path / "fields.txt").write_text("20116\nsmoking\n")
    with pytest.raises(ConfigError, match="cohort.nidp_fields: .*line 2: 'smoking'"):
        planning.check_config(raw_study)
    (tmp_path / "fields.txt").write_text("21001\n4080\n")
    with pytest.raises(ConfigError, match="none of the fields of cohort.nidp_fields"):
        planning.check_config(raw_study)
    raw_study["cohort"]["nidp_fields"] = str(tmp_path / "no_fields.txt")
    with pytest.raises(ConfigError, match=r"cohort\.nidp_fields .* does not exist"):
        planning.check_config(raw_study)


def test_the_nidp_keys_must_agree_with_the_format(study, raw_study, tmp_path):
    cohort = raw_study["cohort"]
    cohort["nidp_descriptions"] = str(tmp_path / "fields.txt")
    with pytest.raises(ConfigError, match="nidp_descriptions is for cohort.nidps_format funpack"):
        planning.check_config(raw_study)
    del cohort["nidp_descriptions"]
    cohort["nidps_format"] = "funpack"  # a list of CSVs taken for one FUNPACK table
    with pytest.raises(ConfigError, match="lists several files.*nidps_format: ukb_main"):
        planning.check_config(raw_study)
    cohort["nidps"] = cohort["nidps"][0]
    with pytest.raises(ConfigError, match="nidp_fields is for cohort.nidps_format ukb_main"):
        planning.check_config(raw_study)


def test_the_main_dataset_may_not_lie_under_results(raw_study):
    raw_study["cohort"]["nidps"].append("results/ukb3.csv")
    with pytest.raises(ConfigError, match=r"cohort\.nidps results/ukb3\.csv lies inside results/"):
        planning.check_inputs_apart(raw_study)


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


def test_the_demo_generator_may_write_only_under_results(tmp_path, monkeypatch):
    """A demo config whose cohort points at real tables: Snakemake would delete them."""
    monkeypatch.chdir(REPO)
    demo = yaml.safe_load((REPO / "config/config.yaml").read_text())
    planning.check_inputs_apart(demo)
    demo["cohort"]["nidps"] = str(tmp_path / "my_real_nidps.tsv")
    with pytest.raises(ConfigError, match=r"cohort\.nidps .* outside results/"):
        planning.check_inputs_apart(demo)


def test_real_inputs_and_results_stay_apart(study, tmp_path):
    study["cohort"]["confounds"] = "results/confounds.tsv"
    with pytest.raises(ConfigError, match=r"cohort\.confounds .* inside results/"):
        planning.check_inputs_apart(study)
    study["cohort"]["confounds"] = str(tmp_path / "confounds.tsv")
    study["cohort"]["data_directory"] = "."
    with pytest.raises(ConfigError, match="contains results/"):
        planning.check_inputs_apart(study)


def test_the_generator_refuses_a_folder_it_did_not_make(tmp_path):
    from agemapper.synth.cohort import MARKER, claim_folder

    real = tmp_path / "subjectsAll"
    (real / "1000001/T1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="refusing to write the synthetic cohort"):
        claim_folder(real)
    assert not (real / MARKER).exists()
    claim_folder(tmp_path / "new")  # a new folder, then the same one again
    claim_folder(tmp_path / "new")
    assert (tmp_path / "new" / MARKER).exists()


def test_an_empty_split_is_caught_at_planning(study, tmp_path):
    folder = tmp_path / "splits"
    rehearsal._write_release_splits(rehearsal._subjects(np.random.default_rng(0)), folder)
    (folder / "female_validation.txt").write_text("")
    np.save(folder / "female_validation_age.npy", np.zeros(0))
    study["cohort"]["subjects"] = str(folder)
    study["cohort"]["excluded"] = None
    with pytest.raises(ConfigError, match="no female validation subjects"):
        planning.check_config(study)


def test_a_pickled_age_file_is_refused_naming_it(tmp_path):
    from agemapper.errors import InputDataError
    from agemapper.images.subjects import read_released

    for sex in ("female", "male"):
        for split in ("train", "validation", "test", "testA", "testB"):
            (tmp_path / f"{sex}_{split}.txt").write_text("1000001\n")
            np.save(tmp_path / f"{sex}_{split}_age.npy", np.array([60.0]))
    pickled = np.array([{"age": 60}], dtype=object)
    np.save(tmp_path / "male_test_age.npy", pickled, allow_pickle=True)
    with pytest.raises(InputDataError, match=r"male_test_age\.npy: not a NumPy array of ages"):
        read_released(tmp_path)


# ----------------------------------------------------------------------------- apply mode


def _networks(
    folder, contrasts, sexes=("female", "male"), replicates=(1, 2, 3), stats=False, imported=True
):
    """A networks folder of tiny model files (what planning reads: names, metadata)."""
    import torch

    from agemapper.networks.serialization import save_tensors

    for c in contrasts:
        for s in sexes:
            for r in replicates:
                d = folder / c / s / f"replicate-{r}"
                meta = {
                    "format": "agemapper-model/1",
                    "input": {"intensity": {"p99_abs": {}}} if stats else {},
                }
                save_tensors(d / "model.safetensors", {"w": torch.zeros(1)}, meta)
                if imported:
                    (d / "manifest.json").write_text("{}")
    return folder


@pytest.fixture
def pretrained_study(study, tmp_path):
    """The study in apply mode with a networks folder and a cohort of calibration + test."""
    folder = tmp_path / "splits"
    rehearsal._write_release_splits(rehearsal._subjects(np.random.default_rng(0)), folder)
    study.update(contrasts=["T1_nonlinear", "swi"])
    study["cohort"].update(subjects=str(folder), excluded=None)
    study["apply"] = {"networks": str(_networks(tmp_path / "networks", study["contrasts"]))}
    return study


def test_apply_settings_resolve_the_sources():
    base = {"ensembles": {"methods": ["mean"]}}
    run = planning.apply_settings({**base, "apply": {"results": "/r"}})
    assert run == {
        "networks": "/r/models",
        "corrections": "/r/deltas/corrections.tsv",
        "ensemble_weights": "/r/ensembles/weights.tsv",
        "calibrate": False,
    }
    own = planning.apply_settings({**base, "apply": {"networks": "n"}})
    assert own["corrections"] == own["ensemble_weights"] == "calibrate" and own["calibrate"]
    mixed = planning.apply_settings(
        {**base, "apply": {"results": "/r", "corrections": "calibrate"}}
    )
    assert mixed["networks"] == "/r/models" and mixed["calibrate"]
    assert planning.apply_settings({"ensembles": {}}) is None


def test_pretrained_mode_passes_and_says_what_it_does(pretrained_study):
    planning.check_config(pretrained_study, apply=True)
    notes = " ".join(planning.apply_notes(pretrained_study))
    assert "12 networks from" in notes and "none is trained" in notes and "read only" in notes
    assert "12 imported by agemapper import-original" in notes
    assert "0 of 12 carry the statistics of their training inputs" in notes
    assert "calibration subjects (split validation): 6 female, 6 male" in notes
    assert "WARNING: fewer than 100 calibration subjects (female, male)" in notes


def test_pretrained_mode_needs_every_network_and_calibration_subjects(pretrained_study, tmp_path):
    pretrained_study["contrasts"].append("vbm")
    with pytest.raises(ConfigError, match=r"apply\.networks: 6 of the networks .* missing .*vbm"):
        planning.check_config(pretrained_study, apply=True)
    pretrained_study["contrasts"].remove("vbm")
    folder = pretrained_study["cohort"]["subjects"]
    (tmp_path / "splits" / "male_validation.txt").write_text("")
    np.save(tmp_path / "splits" / "male_validation_age.npy", np.zeros(0))
    with pytest.raises(
        ConfigError, match=rf"{folder} has no male validation subjects.*calibration"
    ):
        planning.check_config(pretrained_study, apply=True)
    corrections = tmp_path / "corrections.tsv"
    corrections.write_text("contrast\n")
    weights = tmp_path / "weights.tsv"
    weights.write_text("ensemble\n")
    pretrained_study["apply"].update(corrections=str(corrections), ensemble_weights=str(weights))
    planning.check_config(pretrained_study, apply=True)  # nothing fitted: no calibration needed


def test_networks_inside_results_are_refused(pretrained_study):
    pretrained_study["apply"]["networks"] = "results/models"
    with pytest.raises(ConfigError, match=r"apply\.networks puts the networks .* inside results/"):
        planning.check_config(pretrained_study, apply=True)
    pretrained_study["apply"] = {"results": "results"}
    with pytest.raises(ConfigError, match=r"apply\.results puts the networks"):
        planning.check_config(pretrained_study, apply=True)


def test_a_training_run_never_trains_over_imported_networks(study, tmp_path):
    """Networks imported into results/models (what the README once showed) were retrained."""
    results = tmp_path / "results"
    planning.check_config(study, results=str(results))
    _networks(results / "models", ["T1_nonlinear"], ("female",), (1,))
    with pytest.raises(
        ConfigError, match=r"imported by agemapper import-original.*never retrained"
    ):
        planning.check_config(study, results=str(results))
    for manifest in results.rglob("manifest.json"):  # networks trained here: no manifest
        manifest.unlink()
    planning.check_config(study, results=str(results))
