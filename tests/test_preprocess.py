import dataclasses
import json

import numpy as np
import pytest

from agemapper.errors import InputDataError
from agemapper.images.grids import GRIDS
from agemapper.images.preprocess import (
    estimate_scale_factors,
    open_cache,
    preprocess_split,
    preprocess_volume,
    resample,
)
from conftest import make_subjects, write_subject_files


def test_crop_box_normalisation_and_scale(t1_contrast):
    g = GRIDS["1mm"]
    vol = np.zeros(g.shape, np.float32)
    vol[10:170, 12:204, 0:160] = 3.0  # exactly the crop box
    vol[0, 0, 170] = 1000.0  # outside the box: must not matter
    out, stats = preprocess_volume(vol, t1_contrast, (160, 192, 160))
    assert out.shape == (160, 192, 160)
    assert stats["crop_mean"] == pytest.approx(3.0)
    assert np.allclose(out, 1.0 / t1_contrast.scale_factor)  # / mean, / scale factor
    assert stats["nonzero"] == pytest.approx(1.0)


def test_2mm_is_upsampled_with_aligned_corners(rs_contrast):
    g = GRIDS["2mm"]
    vol = np.zeros(g.shape, np.float32)
    ramp = np.linspace(0, 79, 80, dtype=np.float32)
    vol[5:85, 6:102, 0:80] = ramp[:, None, None]
    out, _ = preprocess_volume(vol, rs_contrast, (160, 192, 160))
    assert out.shape == (160, 192, 160)
    # trilinear with aligned corners keeps the end points and is linear in between
    line = out[:, 50, 50] * rs_contrast.scale_factor
    assert line[0] == pytest.approx(0.0, abs=1e-5) and line[-1] == pytest.approx(79.0, abs=1e-4)
    assert np.allclose(np.diff(line), 79 / 159, atol=1e-4)


def test_area_downsampling_keeps_the_mean():
    rng = np.random.default_rng(0)
    vol = rng.random((160, 192, 160)).astype(np.float32)
    small = resample(vol, (40, 48, 40))
    assert small.shape == (40, 48, 40)
    assert small.mean() == pytest.approx(vol.mean(), rel=1e-5)
    assert np.isclose(small[0, 0, 0], vol[:4, :4, :4].mean())


def test_preprocess_split_writes_cache_manifest_and_contract(preprocessed, t1_contrast):
    out, table, subjects = preprocessed
    arr, manifest = open_cache(out / "c.cache")
    assert arr.shape == (4, 40, 48, 40) and arr.dtype == np.float16
    assert list(manifest.subject) == list(subjects.subject)
    assert np.allclose(manifest.age, subjects.age)
    info = json.loads((out / "c.json").read_text())
    assert info["contrast"]["contrast"] == "T1_nonlinear" and info["shape"] == [40, 48, 40]
    # each subject was mean-normalised on its own: brightness differences are gone
    means = [float(np.asarray(arr[i], np.float32).mean()) for i in range(4)]
    assert np.ptp(means) < 1e-3


def test_4d_component_is_selected(tmp_path, rs_contrast):
    subjects = make_subjects(2)
    write_subject_files(tmp_path / "d", rs_contrast, subjects, "2mm", volume_dims=(4,))
    out = tmp_path / "c"
    preprocess_split(
        subjects,
        rs_contrast,
        tmp_path / "d",
        (40, 48, 40),
        out / "x.cache",
        out / "x.tsv",
        out / "x.json",
    )
    arr, _ = open_cache(out / "x.cache")
    assert arr.shape == (2, 40, 48, 40)


def test_missing_subject_file_names_subject_and_file(tmp_path, t1_contrast):
    subjects = make_subjects(3)
    write_subject_files(tmp_path / "d", t1_contrast, subjects.iloc[:2], "1mm")
    out = tmp_path / "c"
    with pytest.raises(InputDataError, match=rf"subject {subjects.subject[2]}.*missing"):
        preprocess_split(
            subjects,
            t1_contrast,
            tmp_path / "d",
            (40, 48, 40),
            out / "x.cache",
            out / "x.tsv",
            out / "x.json",
        )
    assert not (out / "x.cache").exists()  # nothing half-written is left looking complete
    assert not list(out.glob("*.tmp*"))


def test_scale_factor_estimate(preprocessed, t1_contrast):
    out, table, _ = preprocessed
    est = estimate_scale_factors({"T1_nonlinear": table}, {"T1_nonlinear": t1_contrast})
    row = est.iloc[0]
    assert row.estimated_scale_factor == pytest.approx(table.max_normalised.mean())
    assert row.ratio == pytest.approx(row.estimated_scale_factor / 2.0)
    # a ratio beyond a factor 1.5 either way is flagged, a plausible one is not
    flags = {}
    for ratio in (0.49, 0.7, 1.0, 1.45, 1.6):
        ref = dataclasses.replace(t1_contrast, scale_factor=row.estimated_scale_factor / ratio)
        flags[ratio] = estimate_scale_factors({"T1_nonlinear": table}, {"T1_nonlinear": ref}).flag[
            0
        ]
    assert flags[0.49].startswith("implausible: the estimate is 0.49 x the table's")
    assert flags[1.6].startswith("implausible") and flags[0.7] == flags[1.0] == flags[1.45] == ""
