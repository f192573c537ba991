"""Bad input, interruptions and untrusted files (docs/reliability.md lists each case)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from agemapper.errors import InputDataError
from agemapper.images.grids import GRIDS
from agemapper.images.nifti import write_volume
from agemapper.images.preprocess import open_cache, preprocess_split
from agemapper.images.subjects import check
from agemapper.networks.serialization import load_tensors
from agemapper.stats.nidps import read_subject_table
from conftest import REPO, brain_volume, make_cache, make_subjects, write_subject_files

# ----------------------------------------------------------------------------- bad image files


def _missing(path):
    path.unlink()


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[200:4000] = os.urandom(3800)
    path.write_bytes(bytes(data))


def _not_nifti(path):
    path.write_bytes(gzip.compress(b"<html>404 not found</html>" * 50))


def _wrong_grid(path):
    write_volume(path, brain_volume("2mm"), GRIDS["2mm"], np.float32)


def _wrong_voxel_size(path):
    img = nib.Nifti1Image(brain_volume("1mm"), np.diag([1.5, 1.5, 1.5, 1.0]))
    nib.save(img, path)


def _nan(path):
    vol = brain_volume("1mm")
    vol[90, 100, 80] = np.nan
    write_volume(path, vol, GRIDS["1mm"], np.float32)


def _inf(path):
    vol = brain_volume("1mm")
    vol[90, 100, 80] = np.inf
    write_volume(path, vol, GRIDS["1mm"], np.float32)


def _all_zero(path):
    write_volume(path, np.zeros(GRIDS["1mm"].shape), GRIDS["1mm"], np.float32)


def _with_affine(path, affine, sform_code=4, qform_code=4):
    img = nib.Nifti1Image(brain_volume("1mm"), affine)
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    nib.save(img, path)


def _x_flipped(path):
    affine = GRIDS["1mm"].affine_array.copy()
    affine[0, 0], affine[0, 3] = 1.0, -91.0  # neurological instead of FSL's radiological x
    _with_affine(path, affine)


def _scanner_qform_only(path):
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))  # a 10 degree tilt, 1 mm voxels
    scanner = np.array([[1.0, 0, 0, -90.5], [0, c, s, -110.2], [0, -s, c, -60.0], [0, 0, 0, 1]])
    _with_affine(path, scanner, sform_code=0, qform_code=1)


def _shifted_origin(path):
    affine = GRIDS["1mm"].affine_array.copy()
    affine[:3, 3] += (0.0, 4.0, -2.0)
    _with_affine(path, affine)


def _no_orientation(path):
    _with_affine(path, GRIDS["1mm"].affine_array, sform_code=0, qform_code=0)


CASES = {
    "x-flipped": (_x_flipped, "the x axis is flipped"),
    "scanner-qform-only": (_scanner_qform_only, "rotated, sheared or scaled"),
    "shifted-origin": (_shifted_origin, "origin is shifted by (+0, +4, -2) mm"),
    "no-orientation": (_no_orientation, "neither an sform nor a qform"),
    "missing": (_missing, "file is missing"),
    "truncated": (_truncated, "truncated"),
    "corrupt": (_corrupt, "corrupt"),
    "not-nifti": (_not_nifti, "not a NIfTI"),
    "wrong-grid": (_wrong_grid, "is not the 1mm MNI152 grid"),
    "wrong-voxel-size": (_wrong_voxel_size, "voxel size"),
    "nan": (_nan, "NaN or Inf"),
    "inf": (_inf, "NaN or Inf"),
    "all-zero": (_all_zero, "all zeros"),
}


def _cohort(tmp_path, contrast, n=4, grid="1mm", dims=()):
    subjects = make_subjects(n)
    write_subject_files(tmp_path / "data", contrast, subjects, grid, volume_dims=dims)
    return subjects


def _run(tmp_path, subjects, contrast, qc):
    out = tmp_path / f"cache_{qc}"
    return preprocess_split(
        subjects,
        contrast,
        tmp_path / "data",
        (32, 40, 32),
        out / "c.cache",
        out / "c.tsv",
        out / "c.json",
        qc=qc,
        qc_table=out / "qc.tsv",
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_strict_names_subject_file_and_problem(tmp_path, t1_contrast, case):
    plant, message = CASES[case]
    subjects = _cohort(tmp_path, t1_contrast)
    bad = subjects.subject[2]
    path = t1_contrast.path_for(tmp_path / "data", bad)
    plant(path)
    with pytest.raises(InputDataError) as info:
        _run(tmp_path, subjects, t1_contrast, "strict")
    text = str(info.value)
    assert f"subject {bad}" in text and str(path) in text and message in text, text
    assert not (tmp_path / "cache_strict/c.cache").exists()  # nothing that looks complete


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_skip_leaves_subject_out_and_records_why(tmp_path, t1_contrast, case):
    plant, message = CASES[case]
    subjects = _cohort(tmp_path, t1_contrast)
    bad = subjects.subject[1]
    plant(t1_contrast.path_for(tmp_path / "data", bad))
    table = _run(tmp_path, subjects, t1_contrast, "skip")
    assert bad not in set(table.subject) and len(table) == 3
    qc = pd.read_csv(tmp_path / "cache_skip/qc.tsv", sep="\t", dtype=str)
    assert qc.subject.tolist() == [bad] and message in qc.problem[0]
    assert qc.stage[0] == "preprocess" and qc.contrast[0] == "T1_nonlinear"
    arr, manifest = open_cache(tmp_path / "cache_skip/c.cache")
    assert manifest.row.tolist() == [0, 2, 3]
    info = json.loads((tmp_path / "cache_skip/c.json").read_text())
    assert info["skipped"] == 1 and info["subjects"] == 3


@pytest.mark.parametrize(
    "dims, volume, message",
    [((), 2, "4D file with volume 2"), ((2,), 2, "has 2 volumes")],
    ids=["3d-where-4d-needed", "too-few-volumes"],
)
def test_4d_problems(tmp_path, rs_contrast, dims, volume, message):
    subjects = _cohort(tmp_path, rs_contrast, n=2, grid="2mm", dims=dims)
    with pytest.raises(InputDataError, match=message):
        _run(tmp_path, subjects, rs_contrast, "strict")
    with pytest.raises(InputDataError, match="every one of the 2"):
        _run(tmp_path, subjects, rs_contrast, "skip")


# ----------------------------------------------------------------------------- subject table


def _table(tmp_path, rows):
    base = {"sex": "female", "split": "train", "half": "", "age": 60.0}
    frame = pd.DataFrame([{**base, **r} for r in rows])
    path = tmp_path / "subjects.tsv"
    frame.to_csv(path, sep="\t", index=False)
    return path


@pytest.mark.parametrize(
    "rows, bad, message",
    [
        ([{"subject": "1"}, {"subject": "1"}], "1", "listed more than once"),
        ([{"subject": "2"}, {"subject": "2", "split": "test", "half": "A"}], "2", "more than once"),
        ([{"subject": "3", "age": None}], "3", "age"),
        ([{"subject": "4", "age": "sixty"}], "4", "not a number"),
        ([{"subject": "5", "age": 230.0}], "5", "outside"),
    ],
    ids=["twice", "two-splits", "missing-age", "non-numeric-age", "out-of-range-age"],
)
def test_subject_table_problems(tmp_path, rows, bad, message):
    path = _table(tmp_path, [*rows, {"subject": "9"}])
    with pytest.raises(InputDataError, match=rf"subject {bad}\b.*{message}"):
        check(path, qc="strict")
    table, problems = check(path, qc="skip")
    assert table.subject.tolist() == ["9"]
    assert set(problems.subject) == {bad} and problems.problem.str.contains(message).all()


# ----------------------------------------------------------------------------- other inputs


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG\r\n\x1a\n" + os.urandom(300), "cannot be read as a table"),
        (b"", "is empty"),
        (b"a\tb\n1\t2\n", "no subject id column"),
    ],
    ids=["binary", "empty", "no-id-column"],
)
def test_nidp_file_that_is_not_a_table(tmp_path, content, message):
    path = tmp_path / "nidps.tsv"
    path.write_bytes(content)
    with pytest.raises(InputDataError, match=message) as info:
        read_subject_table(path, "nIDP table")
    assert str(path) in str(info.value)


def _dry_run(tmp_path, config: dict):
    import yaml

    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for key, value in config.items():
        section, _, sub = key.partition(".")
        if sub:
            cfg[section][sub] = value
        else:
            cfg[section] = value
    cfg["contrasts_table"] = str(REPO / "config/contrasts.tsv")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--nolock",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "config, message",
    [
        ({"contrasts": ["T1_nonlinear", "T3_nonlinear"]}, "T3_nonlinear"),
        ({"training.epochz": 3}, "epochz"),
        ({"training.epochs": "many"}, "many"),
        ({"qc": "lenient"}, "lenient"),
    ],
    ids=["unknown-contrast", "unknown-key", "wrong-type", "unknown-qc-policy"],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, config, message):
    res = _dry_run(tmp_path, config)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr


# ----------------------------------------------------------------------------- interruptions

TRAIN = """
import logging, sys, torch
from agemapper.networks.training import train_replicates
logging.basicConfig(level=logging.INFO)
torch.set_num_threads(1)
d = sys.argv[1]
model = {"architecture": "agemapper", "channels": [4, 8, 8, 8, 8], "fully_connected": [16, 8]}
training = {"epochs": 30, "batch_size": 4, "learning_rate": 0.003, "loss": "mse", "seed": 5,
            "augmentation": {"max_shift": 1}, "early_stopping_patience": 100}
out = sys.argv[2]
train_replicates(f"{d}/train.cache", f"{d}/val.cache", model, training,
                 {"contrast": "T1_nonlinear"},
                 ("T1", "female"), [f"{out}/w{i}.safetensors" for i in (1, 2)],
                 [f"{out}/m{i}.json" for i in (1, 2)], [f"{out}/t{i}.tsv" for i in (1, 2)],
                 f"{out}/checkpoint.safetensors", {"device": "cpu", "threads": 1})
"""


def _train(tmp_path, out, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(tmp_path), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Data and the weights of an uninterrupted run."""
    d = tmp_path_factory.mktemp("train")
    make_cache(d, "train", 24, seed=1)
    make_cache(d, "val", 8, seed=2)
    proc = _train(d, d / "straight")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return d, [load_tensors(d / f"straight/w{i}.safetensors")[0] for i in (1, 2)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_training_resumes_to_identical_weights(reference, sig):
    d, expected = reference
    out = d / f"killed-{sig.name}"
    out.mkdir()
    proc = _train(d, out)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.safetensors").exists():  # wait for the first epoch's checkpoint
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # and into a later epoch
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert "rerun to resume" in err
    assert not (out / "w1.safetensors").exists()  # no output that looks complete
    assert not [p for p in out.iterdir() if ".tmp" in p.name]

    proc = _train(d, out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert "resumed from" in err
    for i, ref in zip((1, 2), expected, strict=True):
        got, _ = load_tensors(out / f"w{i}.safetensors")
        for key in ref:
            assert torch.equal(ref[key], got[key]), key
    assert not (out / "checkpoint.safetensors").exists()


def test_test_subjects_absent_from_nidp_or_confound_tables():
    from agemapper.qc import QCLog
    from agemapper.stats.associations import check_coverage

    tested = ["1", "2", "3", "4", "5"]
    nidps = pd.DataFrame({"4080-2.0": [1.0, 2, 3, 4]}, index=["1", "2", "4", "5"])
    confounds = pd.DataFrame({"site": [1, 2, 1, np.nan], "motion": [0.1, 0.2, 0.1, 0.3]},
                             index=["1", "2", "3", "5"])  # fmt: skip
    args = (tested, nidps, confounds, ["site", "motion"], "nidps.tsv", "conf.tsv")
    with pytest.raises(InputDataError, match=r"subject 3, file nidps.tsv: absent from the nIDP "
                       r"table \(2 more"):  # fmt: skip
        check_coverage(*args, QCLog("strict", "associations"))
    qclog = QCLog("skip", "associations")
    check_coverage(*args, qclog)
    got = {(r["subject"], r["file"], r["problem"]) for r in qclog.rows}
    assert got == {
        ("3", "nidps.tsv", "absent from the nIDP table"),
        ("4", "conf.tsv", "absent from the confound table"),
        ("5", "conf.tsv", "missing confound(s) ['site']"),
    }


# ----------------------------------------------------------------------------- intensities


def _intensity_cohort(tmp_path, contrast, n=8, scale=None, offset=None, bad=3):
    """n subjects' files; subject ``bad`` saved x``scale``, or as int16 with an intercept."""
    subjects = make_subjects(n)
    write_subject_files(tmp_path / "data", contrast, subjects, "1mm")
    path = contrast.path_for(tmp_path / "data", subjects.subject[bad])
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if scale is not None:
        write_volume(path, data * scale, GRIDS["1mm"], np.float32)
    if offset is not None:  # int16 with scl_inter: every background voxel becomes `offset`
        out = nib.Nifti1Image(np.rint(data).astype(np.int16), GRIDS["1mm"].affine_array)
        out.set_sform(GRIDS["1mm"].affine_array, code=4)
        out.header.set_slope_inter(1.0, offset)
        nib.save(out, path)
    return subjects, path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"scale": 1000.0}, "median |intensity| after scaling"),
        ({"offset": 100.0}, "fraction of non-zero voxels"),
    ],
    ids=["x1000", "int16-scl_inter-100"],
)
def test_an_intensity_outlier_is_named_or_left_out(tmp_path, change, message):
    from agemapper.images.contrasts import Contrast

    # a contrast without mean normalisation: a x1000 file would reach the network as it is
    swi = Contrast("swi", "structural", "1mm", "SWI/SWI_to_MNI.nii.gz", None, "none", 100.0)
    subjects, path = _intensity_cohort(tmp_path, swi, **change)
    bad = subjects.subject[3]
    with pytest.raises(InputDataError) as info:
        _run(tmp_path, subjects, swi, "strict")
    text = str(info.value)
    assert f"subject {bad}" in text and str(path) in text and message in text, text
    table = _run(tmp_path, subjects, swi, "skip")
    assert bad not in set(table.subject) and len(table) == len(subjects) - 1
    qc = pd.read_csv(tmp_path / "cache_skip/qc.tsv", sep="\t", dtype=str)
    assert qc.subject.tolist() == [bad] and message in qc.problem[0]


def test_a_split_off_the_training_intensities_stops(tmp_path, t1_contrast):
    from agemapper.images.contrasts import Contrast

    swi = Contrast("swi", "structural", "1mm", "SWI/SWI_to_MNI.nii.gz", None, "none", 100.0)
    train = make_subjects(8)
    write_subject_files(tmp_path / "data", swi, train, "1mm")
    out = tmp_path / "train"
    preprocess_split(
        train, swi, tmp_path / "data", (32, 40, 32), out / "c.cache", out / "c.tsv", out / "c.json"
    )
    test = make_subjects(6, split="test", start=3000000)
    for i, s in enumerate(test.subject):  # another pipeline: twice the intensities
        vol = brain_volume("1mm", 2 * (100.0 + i), seed=i)
        write_volume(swi.path_for(tmp_path / "data", s), vol, GRIDS["1mm"], np.float32)
    with pytest.raises(
        InputDataError,
        match=r"median \|intensity\| after scaling: the median over its 6 subjects is 1.98x",
    ):
        preprocess_split(test, swi, tmp_path / "data", (32, 40, 32), tmp_path / "t/c.cache",
                         tmp_path / "t/c.tsv", tmp_path / "t/c.json", qc="skip",
                         reference=out / "c.tsv")  # fmt: skip


def _network_trained_on(tmp_path, contrast, n=8):
    """A network file whose metadata holds what training stores about its inputs (the
    training split's intensity summary, via the train rule's contract), and that split."""
    from agemapper.networks.pretrained import training_contract
    from agemapper.networks.serialization import save_tensors

    train = make_subjects(n)
    write_subject_files(tmp_path / "data", contrast, train, "1mm")
    out = tmp_path / "train"
    preprocess_split(
        train,
        contrast,
        tmp_path / "data",
        (32, 40, 32),
        out / "c.cache",
        out / "c.tsv",
        out / "c.json",
    )
    info = json.loads((out / "c.json").read_text())
    meta = {
        "format": "agemapper-model/1",
        "input": {**training_contract(info), "shape": [32, 40, 32]},
    }
    weights = tmp_path / "networks/swi/female/replicate-1/model.safetensors"
    save_tensors(weights, {"w": torch.zeros(1)}, meta)
    return weights


def _new_cohort(tmp_path, contrast, factors, start=3000000):
    """A new cohort in the networks' pipeline: subject i's intensities x factors[i]."""
    cohort = make_subjects(len(factors), split="test", start=start)
    for i, (s, f) in enumerate(zip(cohort.subject, factors, strict=True)):
        vol = brain_volume("1mm", f * (100.0 + i), seed=i)
        write_volume(contrast.path_for(tmp_path / "data", s), vol, GRIDS["1mm"], np.float32)
    return cohort


def test_a_cohort_off_the_networks_training_inputs_stops(tmp_path):
    """Apply mode: the statistics stored with the networks are the reference; a cohort at
    twice the intensity scale (another pipeline) stops, naming the contrast and statistic."""
    from agemapper.images.contrasts import Contrast
    from agemapper.networks.pretrained import input_reference

    swi = Contrast("swi", "structural", "1mm", "SWI/SWI_to_MNI.nii.gz", None, "none", 100.0)
    reference = input_reference([_network_trained_on(tmp_path, swi)])
    assert set(reference) == {"nonzero", "median_abs", "p99_abs"} and reference["p99_abs"]["n"] == 8
    cohort = _new_cohort(tmp_path, swi, [2.0] * 6)
    for qc in ("strict", "skip"):
        with pytest.raises(InputDataError) as info:
            preprocess_split(
                cohort,
                swi,
                tmp_path / "data",
                (32, 40, 32),
                tmp_path / "a/c.cache",
                tmp_path / "a/c.tsv",
                tmp_path / "a/c.json",
                qc=qc,
                reference=reference,
            )
        text = str(info.value)
        assert "contrast swi" in text and "swi female test" in text
        assert "median |intensity| after scaling: the median over its 6 subjects is 1.98x" in text


def test_a_subject_off_the_networks_training_inputs_is_named_or_left_out(tmp_path):
    from agemapper.images.contrasts import Contrast
    from agemapper.networks.pretrained import input_reference

    swi = Contrast("swi", "structural", "1mm", "SWI/SWI_to_MNI.nii.gz", None, "none", 100.0)
    reference = input_reference([_network_trained_on(tmp_path, swi)])
    cohort = _new_cohort(tmp_path, swi, [1, 1, 2, 1, 1, 1])
    bad = cohort.subject[2]
    args = (cohort, swi, tmp_path / "data", (32, 40, 32))
    with pytest.raises(InputDataError) as info:
        preprocess_split(
            *args,
            tmp_path / "s/c.cache",
            tmp_path / "s/c.tsv",
            tmp_path / "s/c.json",
            reference=reference,
        )
    text = str(info.value)
    assert f"subject {bad}, contrast swi" in text and "median |intensity| after scaling" in text
    table = preprocess_split(
        *args,
        tmp_path / "k/c.cache",
        tmp_path / "k/c.tsv",
        tmp_path / "k/c.json",
        qc="skip",
        qc_table=tmp_path / "k/qc.tsv",
        reference=reference,
    )
    assert bad not in set(table.subject) and len(table) == 5
    qc = pd.read_csv(tmp_path / "k/qc.tsv", sep="\t", dtype=str)
    assert qc.subject.tolist() == [bad] and "1.97x the training split's" in qc.problem[0]


def test_networks_without_statistics_leave_the_cohort_its_own_reference(tmp_path):
    from agemapper.networks.pretrained import input_reference
    from agemapper.networks.serialization import save_tensors

    weights = tmp_path / "model.safetensors"  # what an import of the original release holds
    save_tensors(weights, {"w": torch.zeros(1)}, {"format": "agemapper-model/1", "input": {}})
    assert input_reference([weights, weights]) is None


def test_values_beyond_the_float16_cache_are_refused(tmp_path):
    from agemapper.images.contrasts import Contrast

    vbm = Contrast("vbm", "structural", "1mm", "T1/vbm.nii.gz", None, "none", 3.5)
    subjects, path = _intensity_cohort(tmp_path, vbm, scale=1e6)  # finite in float32
    with pytest.raises(InputDataError, match="beyond the float16 range of the cache"):
        _run(tmp_path, subjects, vbm, "strict")


# ----------------------------------------------------------------------------- stopped jobs

PREPROCESS = """
import logging, sys
import pandas as pd
from agemapper.images.contrasts import Contrast
from agemapper.images.preprocess import preprocess_split
from agemapper.runner import log_to
log_to(None)
d, out = sys.argv[1], sys.argv[2]
c = Contrast("T1_nonlinear", "structural", "1mm", "T1/T1_brain_to_MNI.nii.gz", None, "mean", 2.0)
subjects = pd.read_csv(f"{d}/subjects.tsv", sep="\\t", dtype={"subject": str, "half": str})
subjects["half"] = subjects["half"].fillna("")
preprocess_split(subjects, c, f"{d}/data", (32, 40, 32), f"{out}/c.cache", f"{out}/c.tsv",
                 f"{out}/c.json", checkpoint=f"{d}/checkpoints/c.cache")
"""


def _preprocess(d, out):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", PREPROCESS, str(d), str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def many_subjects(tmp_path_factory):
    """24 subjects' T1 files and the cache of an uninterrupted run."""
    from conftest import preprocess_files

    d = tmp_path_factory.mktemp("prep")
    subjects = make_subjects(24)
    subjects.to_csv(d / "subjects.tsv", sep="\t", index=False)
    from agemapper.images.contrasts import Contrast

    t1 = Contrast("T1_nonlinear", "structural", "1mm", "T1/T1_brain_to_MNI.nii.gz", None,
                  "mean", 2.0)  # fmt: skip
    out, _ = preprocess_files(d, t1, subjects, (32, 40, 32))
    return d, (out / "c.cache").read_bytes()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_preprocessing_job_resumes_and_leaves_no_temporary_file(many_subjects, sig):
    d, expected = many_subjects
    out = d / f"out-{sig.name}"
    journal = d / "checkpoints/c.cache.journal"
    journal.unlink(missing_ok=True)
    (out).mkdir()
    (out / ".c.cache.x1y2.tmp.cache").write_bytes(b"left by an old kill")
    proc = _preprocess(d, out)
    deadline = time.monotonic() + 300
    while not journal.exists() or len(journal.read_text().splitlines()) < 4:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert "received signal 15" in err and "stopped by signal 15 after" in err, err
        assert "Traceback" not in err
    assert not (out / "c.cache").exists()  # nothing that looks complete
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # stale and new temporaries gone
    done = len(journal.read_text().splitlines()) - 1

    proc = _preprocess(d, out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    resumed = int(__import__("re").search(r"resumed with (\d+) of 24", err)[1])
    assert resumed >= done - 1 and resumed >= 3
    assert (out / "c.cache").read_bytes() == expected  # the same bytes as an uninterrupted run
    assert not journal.exists() and not (d / "checkpoints/c.cache").exists()


def test_empty_qc_tables_say_none_and_the_summary_skips_that_line(tmp_path):
    from agemapper.io import write_table
    from agemapper.qc import NONE, QCLog, read_tables

    clean = QCLog("skip", "preprocess", contrast="swi", sex="male", split="test")
    table = clean.table()
    assert len(table) == 1 and table.problem[0] == NONE and table.contrast[0] == "swi"
    assert clean.frame().empty and len(clean) == 0
    dirty = QCLog("skip", "subjects")
    dirty.handle(InputDataError("age is missing", subject="1000001", path="subjects.tsv"))
    assert dirty.table().subject.tolist() == ["1000001"]
    write_table(tmp_path / "a.tsv", table)
    write_table(tmp_path / "b.tsv", dirty.table())
    summary = read_tables([tmp_path / "a.tsv", tmp_path / "b.tsv"])
    assert summary.subject.tolist() == ["1000001"]
    assert read_tables([tmp_path / "a.tsv"]).empty
