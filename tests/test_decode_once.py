"""Preprocessing at the decode-once limit: each file decoded once for every contrast reading it,
with the same bytes as before.

- caches, manifests and sidecars of full-size volumes have the hashes the code before this
  change (commit c10a8b9, one job per contrast, numpy arithmetic) wrote for the same inputs;
- per volume, the fast path gives the bytes and statistics of the old numpy code (kept here
  verbatim as the reference), on every layout, storage type and grid;
- a job of several contrasts writes exactly what one job per contrast writes;
- bad input: a volume's problem concerns its contrast, a file's problem all of its contrasts;
  a stopped job of several contrasts resumes to the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from agemapper.errors import ConfigError, InputDataError
from agemapper.images import preprocess as prep
from agemapper.images.cache import VolumeCache, encode
from agemapper.images.contrasts import Contrast, by_source, read_contrasts
from agemapper.images.grids import GRIDS, get_grid
from agemapper.images.intensity import median_of_sorted, percentile_of_sorted
from agemapper.images.nifti import load_volume, read_image, write_volume
from agemapper.images.preprocess import prepare_volume, preprocess_contrasts, preprocess_split

FULL = (160, 192, 160)
C = {
    "T1_nonlinear": Contrast("T1_nonlinear", "structural", "1mm", "T1/T1_brain_to_MNI.nii.gz",
                             None, "mean", 5.55),
    "swi": Contrast("swi", "susceptibility", "1mm", "SWI/T2star_to_MNI.nii.gz", None, "none",
                    76.58),
    "tbss_FA_s": Contrast("tbss_FA_s", "diffusion", "1mm",
                          "dMRI/TBSS/stats/all_FA_skeletonised.nii.gz", None, "none", 1.0043),
    "vbm": Contrast("vbm", "structural", "2mm", "T1/T1_vbm/T1_GM_to_template_GM_mod.nii.gz",
                    None, "none", 3.5557),
    **{f"rsfmri_{k}": Contrast(f"rsfmri_{k}", "resting fMRI", "2mm",
                               "fMRI/rfMRI_25.dr/dr_stage2.nii.gz", k, "none", s)
       for k, s in ((0, 20.7), (1, 24.2), (3, 13.6))},
}  # fmt: skip
RS = [C[f"rsfmri_{k}"] for k in (0, 1, 3)]

# What the code before this change wrote for the cohort of _build (full size): sha256 (first 16
# hex digits) of the cache, the manifest and the sidecar without its agemapper_version, the
# manifest and sidecar without median_abs and p99_abs (now of every 8th voxel: compared to the
# whole volume's in test_each_volume_has_the_old_bytes_and_statistics).
GOLDEN = {
    "T1_nonlinear train": ("df3858e476cc3ec6", "da1b5a27b20b4143", "0dab335cf3cf5beb"),
    "T1_nonlinear validation": ("9fd782ec76b4520d", "11797c540929ef41", "c5905bae7cc3f526"),
    "rsfmri_0 train": ("db177fe130ba4b6b", "35dee93b0bc0f0f0", "2f96245e0f09822a"),
    "rsfmri_0 validation": ("55a5c933ee803975", "bac8fc4fc557390d", "84af546964e68642"),
    "rsfmri_1 train": ("e4f31c4c6ec29c63", "c5f6b121d8fa6154", "03328640c08eb808"),
    "rsfmri_1 validation": ("806b4d238b526b0a", "93a81b6eb60dffa3", "b9e1f18646cccdac"),
    "rsfmri_3 train": ("b158e4147849c432", "594b330d05376f02", "2235b71650e88f0c"),
    "rsfmri_3 validation": ("f9ef0a66df3c9594", "192ae42dbd5eb9d0", "c8d6b3d465976224"),
    "swi train": ("86295b17658a8eae", "90e070986f2df799", "2d60d154e57cb044"),
    "swi validation": ("5dad59a28d531b7a", "f345f57ddcde467a", "aae1105981b9fd0d"),
    "tbss_FA_s train": ("9294b097cda37e1b", "93207a0bb8246343", "761b5205635cb047"),
    "tbss_FA_s validation": ("f0042ba9c604fd17", "f24a5dee5bb7db2a", "9df3ca68f1301411"),
    "vbm train": ("d028e6aa2dc5864c", "53265e3b551eec41", "d79b44b367581bef"),
    "vbm validation": ("79d375cd6237c5c7", "fc893ac9db3b3236", "be53966cfdd3c0cf"),
}
# The same for float32 caches (preprocess.cache_dtype: float32), of two contrasts.
GOLDEN_FLOAT32 = {
    "T1_nonlinear train": ("660e747eda77480b", "0bc8b7c91231c198", "bafd52dcee9a9fd3"),
    "T1_nonlinear validation": ("36572475210e71dd", "e96dd496f9a4de82", "dd30e4fba2cea020"),
    "rsfmri_0 train": ("19b9dbac4e355008", "32050f30f2b2f746", "51fffe2970567c06"),
    "rsfmri_0 validation": ("e8082eb2027f672c", "11a988d5611fb77f", "a6cba49dea8ec3fa"),
}


def _brain(grid, rng):
    g = GRIDS[grid]
    idx = np.ogrid[tuple(slice(0, n) for n in g.shape)]
    r2 = sum(((i - n / 2) / (0.38 * n)) ** 2 for i, n in zip(idx, g.shape, strict=True))
    return r2 < 1.0 + 0.02 * rng.standard_normal(g.shape).astype(np.float32)


def _volume(name, rng):
    """One subject's file for ``name``: values, storage type, quantum."""
    c = C[name]
    g = GRIDS[c.resolution]
    mask = _brain(c.resolution, rng)
    n = int(mask.sum())
    if name.startswith("rsfmri"):
        vol = np.zeros(g.shape + (4,), np.float32)
        for k in range(4):
            v = np.zeros(g.shape, np.float32)
            v[mask] = rng.normal(0, 4 + k, n)  # signed maps
            vol[..., k] = v
        vol[50, 50, 40, 0] = -0.0
        vol[40, 50, 40, :] = 1e-7  # underflows float16 after scaling
        return vol, np.float32, None
    v = np.zeros(g.shape, np.float32)
    if name == "tbss_FA_s":
        keep = mask & (rng.random(g.shape) < 0.03)
        v[keep] = rng.uniform(0.15, 0.85, int(keep.sum()))
        return v, np.float32, None
    level = {"T1_nonlinear": 600.0, "swi": 45.0, "vbm": 0.6}[name]
    v[mask] = level * (1 + 0.08 * rng.standard_normal(n))
    v[mask & (rng.random(g.shape) < 1e-4)] = 1e-6 * level  # tiny: float16 zero or subnormal
    if name == "swi":  # the demo's storage: int16 with a scale slope
        return v, np.int16, 0.25
    return v, np.float32, None


def _build(root: Path, n_train=6, n_val=3) -> pd.DataFrame:
    """A cohort of full-size files, the same on every machine (seeded), as the golden run's."""
    subjects = pd.DataFrame(
        [{"subject": str(3000001 + i), "sex": "female",
          "split": "train" if i < n_train else "validation", "half": "", "age": 50.0 + 2.5 * i}
         for i in range(n_train + n_val)]
    )  # fmt: skip
    for i, s in enumerate(subjects.subject):
        written = set()
        for c in C.values():
            if c.data_file in written:
                continue
            written.add(c.data_file)
            rng = np.random.default_rng([7, i, len(written)])
            vol, dtype, quantum = _volume(c.name, rng)
            write_volume(c.path_for(root / "data", s), vol, GRIDS[c.resolution], dtype, quantum)
    return subjects


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


SAMPLED = ["median_abs", "p99_abs"]


def _digests(files) -> tuple:
    info = json.loads(Path(files[2]).read_text())
    info.pop("agemapper_version")
    for k in SAMPLED:
        info["intensity"].pop(k)
    table = pd.read_csv(files[1], sep="\t", dtype=str, keep_default_na=False)
    manifest = table.drop(columns=SAMPLED).to_csv(sep="\t", index=False).encode()
    return (_sha(files[0]), hashlib.sha256(manifest).hexdigest()[:16],
            hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16])  # fmt: skip


def _files(folder: Path, names) -> dict:
    return {e: [folder / f"{n}.{e}" for n in names] for e in ("cache", "tsv", "json", "qc")}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    return root, _build(root)


def _run_jobs(root, subjects, jobs, out, shape=FULL, dtype="float16"):
    """Train then validation (against the train manifests) for each job's contrasts."""
    for split in ("train", "validation"):
        for members in jobs:
            names = [f"{c.name}_{split}" for c in members]
            f = _files(out, names)
            refs = None if split == "train" else [out / f"{c.name}_train.tsv" for c in members]
            preprocess_contrasts(subjects[subjects.split == split], members, root / "data",
                                 shape, f["cache"], f["tsv"], f["json"], qc_tables=f["qc"],
                                 references=refs, dtype=dtype)  # fmt: skip


def test_caches_manifests_and_sidecars_are_those_of_the_code_before(cohort):
    """Grouped by source file (the 3 components in one job), every output has the hash the
    per-contrast code of commit c10a8b9 wrote for the same inputs."""
    root, subjects = cohort
    out = root / "grouped"
    _run_jobs(root, subjects, by_source(C.values()).values(), out)
    got = {
        f"{name} {split}": _digests([out / f"{name}_{split}.{e}" for e in ("cache", "tsv", "json")])
        for name in C
        for split in ("train", "validation")
    }
    assert got == GOLDEN


def test_float32_caches_are_those_of_the_code_before(cohort):
    root, subjects = cohort
    out = root / "grouped32"
    _run_jobs(root, subjects, [[C["T1_nonlinear"]], RS], out, dtype="float32")
    got = {
        f"{name} {split}": _digests([out / f"{name}_{split}.{e}" for e in ("cache", "tsv", "json")])
        for name in ("T1_nonlinear", "rsfmri_0")
        for split in ("train", "validation")
    }
    assert got == GOLDEN_FLOAT32
    assert VolumeCache(out / "rsfmri_0_train.cache").dtype == np.float32


def test_a_job_of_several_contrasts_writes_what_one_job_each_writes(cohort):
    root, subjects = cohort
    grouped, single = root / "grouped-small", root / "single-small"
    chosen = [C["T1_nonlinear"], *RS]  # two files, one of them for three contrasts
    _run_jobs(root, subjects, [chosen], grouped, shape=(32, 40, 32))  # one job, two files
    _run_jobs(root, subjects, [[c] for c in chosen], single, shape=(32, 40, 32))
    for c in chosen:
        for split in ("train", "validation"):
            for ext in ("cache", "tsv", "json", "qc"):
                name = f"{c.name}_{split}.{ext}"
                assert (grouped / name).read_bytes() == (single / name).read_bytes(), name


# ----------------------------------------------------------------- per volume: old numpy code


def _old_load(path, grid, volume):
    """load_volume before this change: nibabel's proxy, per volume."""
    img = read_image(path)
    proxy = img.dataobj
    if volume is None:
        arr = np.asarray(proxy, dtype=np.float32).reshape(grid.shape)
    else:
        arr = np.asarray(proxy[..., volume], dtype=np.float32).reshape(grid.shape)
    assert np.isfinite(arr).all() and arr.any()
    return arr


def _old_preprocess(volume, contrast, shape):
    """preprocess_volume and volume_statistics before this change, verbatim in substance, but
    for the median and 99th percentile of |scaled|, now numpy's of every 8th voxel of a
    volume of 500,000 voxels or more."""
    grid = get_grid(contrast.resolution)
    cropped = volume[grid.crop_slices]
    crop_mean = float(cropped.mean(dtype=np.float64))
    norm = 1.0 / crop_mean if contrast.normalise == "mean" else 1.0
    if tuple(shape) == cropped.shape:
        out = np.array(cropped, dtype=np.float32)
    elif all(t <= s for t, s in zip(shape, cropped.shape, strict=True)):
        x = torch.from_numpy(np.ascontiguousarray(cropped, dtype=np.float32))[None, None]
        out = F.adaptive_avg_pool3d(x, shape)[0, 0].numpy()
    else:
        x = torch.from_numpy(np.ascontiguousarray(cropped, dtype=np.float32))[None, None]
        out = F.interpolate(x, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()
    out *= np.float32(norm / contrast.scale_factor)
    sample = cropped[::2, ::2, ::2]
    inside = sample[sample != 0]
    sub = out[::2, ::2, ::2] if out.size >= 500_000 else out
    scaled_inside = np.abs(sub[sub != 0])
    stats = {
        "crop_mean": crop_mean,
        "max_normalised": float(cropped.max()) * norm,
        "p999_normalised": float(np.percentile(inside, 99.9)) * norm if inside.size else 0.0,
        "max_scaled": float(out.max()),
        "nonzero": float(np.count_nonzero(sample)) / sample.size,
        "median_abs": float(np.median(scaled_inside)),
        "p99_abs": float(np.percentile(scaled_inside, 99)),
    }
    v = np.ascontiguousarray(out, dtype=np.float16).reshape(-1)  # CacheWriter.write before
    mask = v != 0
    return np.packbits(mask).tobytes() + v[mask].tobytes(), stats


@pytest.mark.parametrize("shape", [FULL, (32, 40, 32), (40, 48, 40)], ids=["full", "32", "40"])
def test_each_volume_has_the_old_bytes_and_statistics(cohort, shape):
    root, subjects = cohort
    for sid in subjects.subject[:2]:
        for c in C.values():
            grid = get_grid(c.resolution)
            path = c.path_for(root / "data", sid)
            stored = prep.stored_shape(grid.crop_shape, shape)
            new = load_volume(path, grid, c.volume)
            old = _old_load(path, grid, c.volume)
            assert new.strides == old.strides and np.array_equal(new, old)
            out, stats, record = prepare_volume(new, c, stored)
            expected_bytes, expected_stats = _old_preprocess(old, c, stored)
            assert record.mask.tobytes() + record.values.tobytes() == expected_bytes, c.name
            assert stats == expected_stats, c.name
            assert prep.preprocess_volume(new, c, stored)[1] == expected_stats
            # every 8th voxel's median and 99th percentile are the whole volume's to 5%
            # (2.7% at worst on these noise volumes), far inside the QC's x1.5 factors
            whole = np.abs(out[out != 0])
            for k, full in (
                ("median_abs", np.median(whole)),
                ("p99_abs", np.percentile(whole, 99)),
            ):
                assert abs(np.log(stats[k] / full)) < 0.05, (c.name, k, stats[k], full)


def test_the_demo_storage_int8_4d_with_a_slope(tmp_path):
    """The synthetic cohort stores the 4D file as int8 with a scale slope: nibabel's scaling."""
    rng = np.random.default_rng(3)
    vol = np.zeros(GRIDS["2mm"].shape + (4,), np.float32)
    vol[10:80, 10:100, 5:85] = rng.normal(0, 20, (70, 90, 80, 4))
    path = tmp_path / "dr.nii.gz"
    write_volume(path, vol, GRIDS["2mm"], np.int8, quantum=0.5)
    for c in RS:
        new = load_volume(path, GRIDS["2mm"], c.volume)
        old = _old_load(path, GRIDS["2mm"], c.volume)
        assert new.strides == old.strides and np.array_equal(new, old)
        for shape in (FULL, (32, 40, 32)):
            stored = prep.stored_shape(GRIDS["2mm"].crop_shape, shape)
            _, stats, record = prepare_volume(new, c, stored)
            assert (record.mask.tobytes() + record.values.tobytes(), stats) == _old_preprocess(
                old, c, stored
            )


def _old_encode(volume) -> bytes:
    v = np.ascontiguousarray(volume, dtype=np.float16).reshape(-1)
    mask = v != 0
    return np.packbits(mask).tobytes() + v[mask].tobytes()


def test_encode_is_numpys_cast_for_every_value_and_layout():
    rng = np.random.default_rng(1)
    for trial in range(60):
        shape = tuple(int(s) for s in rng.integers(1, 30, 3))
        v = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-9, 6)).astype(np.float32)
        v[rng.random(shape) < 0.5] = 0
        v[rng.random(shape) < 0.05] = -0.0
        if trial % 4 == 0:
            v[rng.random(shape) < 0.02] = np.nan
        if trial % 5 == 0:
            v[rng.random(shape) < 0.02] = np.inf
        if trial % 6 == 0:
            v[rng.random(shape) < 0.02] = 70000.0  # beyond float16: inf
        layouts = (v, np.asfortranarray(v), v.astype(np.float64), v[::-1], v.transpose(1, 0, 2))
        for arr in layouts:
            record = encode(arr)
            assert record.mask.tobytes() + record.values.tobytes() == _old_encode(arr)
    # every float32 bit pattern class: subnormals, signalling NaNs, infinities
    bits = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32)
    v = np.asfortranarray(
        bits[: bits.size - bits.size % 1000].view(np.float32).reshape(10, 100, -1)
    )
    record = encode(v)
    assert record.mask.tobytes() + record.values.tobytes() == _old_encode(v)


def test_order_statistics_of_a_sorted_array_are_numpys():
    rng = np.random.default_rng(0)
    for trial in range(3000):
        n = int(rng.integers(1, 40)) if trial % 10 else int(rng.integers(1, 50000))
        x = (rng.standard_normal(n) * 10 ** rng.uniform(-5, 5)).astype(np.float32)
        if trial % 3 == 0:
            x = np.round(np.abs(x))  # ties
        s = np.sort(x)
        assert median_of_sorted(s) == float(np.median(x))
        for q in (99, 99.9, 50, 0, 100, 12.5):
            assert percentile_of_sorted(s, q) == float(np.percentile(x, q)), (n, q)
    s = np.sort(np.array([1, np.nan, 2], np.float32))
    assert np.isnan(median_of_sorted(s)) and np.isnan(percentile_of_sorted(s, 99))


# ----------------------------------------------------------------- grouping and bad input


def test_by_source_groups_the_components_and_names_every_group():
    table = read_contrasts()
    groups = by_source(table.values())
    assert len(groups) == 33 and list(groups)[:2] == ["T1_nonlinear", "T1_linear"]
    assert [c.name for c in groups["rsfmri"]] == [f"rsfmri_{k}" for k in range(25)]
    assert all(len(g) == 1 and g[0].name == name for name, g in groups.items() if name != "rsfmri")
    picked = by_source([table["rsfmri_3"], table["T1_nonlinear"], table["rsfmri_12"]])
    assert {k: [c.name for c in g] for k, g in picked.items()} == {
        "rsfmri": ["rsfmri_3", "rsfmri_12"], "T1_nonlinear": ["T1_nonlinear"]}  # fmt: skip
    # contrasts that share nothing but a file are named by it
    a = Contrast("FA_a", "diffusion", "1mm", "dMRI/x/all_FA.nii.gz", None, "none", 1.0)
    b = Contrast("fa_b", "diffusion", "1mm", "dMRI/x/all_FA.nii.gz", None, "none", 2.0)
    assert list(by_source([a, b])) == ["dMRI_x_all_FA"]
    bad = Contrast("fa_c", "diffusion", "2mm", "dMRI/x/all_FA.nii.gz", None, "none", 2.0)
    with pytest.raises(ConfigError, match="disagree on its resolution"):
        preprocess_contrasts(pd.DataFrame({"subject": ["1"], "sex": "female", "split": "train",
                                           "half": "", "age": 60.0}), [a, bad], "/nowhere",
                             (32, 40, 32), ["x", "y"], ["x", "y"], ["x", "y"])  # fmt: skip


def _component_cohort(root: Path, n=4):
    subjects = pd.DataFrame(
        {"subject": [str(4000001 + i) for i in range(n)], "sex": "male", "split": "train",
         "half": "", "age": np.linspace(50, 70, n)}
    )  # fmt: skip
    rng = np.random.default_rng(5)
    for i, s in enumerate(subjects.subject):
        vol = np.zeros(GRIDS["2mm"].shape + (4,), np.float32)
        vol[10:80, 10:100, 5:85] = rng.normal(0, 5, (70, 90, 80, 4)).astype(np.float32)
        if i == 1:
            vol[..., 1] = 0  # component 1 of this subject is empty
        write_volume(RS[0].path_for(root, s), vol, GRIDS["2mm"], np.float32)
    return subjects


def _run_components(root, subjects, qc, out, **kw):
    f = _files(out, [c.name for c in RS])
    return preprocess_contrasts(subjects, RS, root, (32, 40, 32), f["cache"], f["tsv"],
                                f["json"], qc_tables=f["qc"], qc=qc, **kw)  # fmt: skip


def test_a_volume_problem_leaves_the_subject_out_of_that_contrast_only(tmp_path):
    subjects = _component_cohort(tmp_path / "data")
    bad = subjects.subject[1]
    tables = _run_components(tmp_path / "data", subjects, "skip", tmp_path / "out")
    assert bad not in set(tables["rsfmri_1"].subject)
    assert bad in set(tables["rsfmri_0"].subject) and bad in set(tables["rsfmri_3"].subject)
    qc = pd.read_csv(tmp_path / "out/rsfmri_1.qc", sep="\t", dtype=str)
    assert qc.subject.tolist() == [bad] and qc.contrast[0] == "rsfmri_1"
    assert "all zeros" in qc.problem[0]
    for name in ("rsfmri_0", "rsfmri_3"):
        assert pd.read_csv(tmp_path / f"out/{name}.qc", sep="\t").problem[0].startswith("none")
    with pytest.raises(InputDataError, match=rf"subject {bad}, contrast rsfmri_1, .*all zeros"):
        _run_components(tmp_path / "data", subjects, "strict", tmp_path / "strict")
    assert not list((tmp_path / "strict").glob("*.cache"))  # no contrast's outputs


def test_values_are_checked_in_the_box_that_is_used(tmp_path):
    """NaN/Inf in the AgeMapper box leaves the subject out of that map; outside the box (never
    read) it changes nothing: the caches are those of the file without it."""
    subjects = _component_cohort(tmp_path / "data")
    clean = _run_components(tmp_path / "data", subjects, "skip", tmp_path / "clean")
    for i, (where, value) in enumerate((((40, 50, 40, 2), np.nan), ((2, 2, 85, 0), np.inf))):
        path = RS[0].path_for(tmp_path / "data", subjects.subject[2 + i])
        img = read_image(path)
        vol = np.asarray(img.dataobj, dtype=np.float32)
        vol[where] = value  # volume 2 is no map here; volume 0 is rsfmri_0, outside its box
        write_volume(path, vol, GRIDS["2mm"], np.float32)
    tables = _run_components(tmp_path / "data", subjects, "skip", tmp_path / "out")
    for c in RS:
        assert tables[c.name].equals(clean[c.name]), c.name
        assert (tmp_path / f"out/{c.name}.cache").read_bytes() == (
            tmp_path / f"clean/{c.name}.cache"
        ).read_bytes()
    path = RS[0].path_for(tmp_path / "data", subjects.subject[3])
    vol = np.asarray(read_image(path).dataobj, dtype=np.float32)
    vol[40, 50, 40, 3] = -np.inf  # in the box of rsfmri_3
    write_volume(path, vol, GRIDS["2mm"], np.float32)
    tables = _run_components(tmp_path / "data", subjects, "skip", tmp_path / "inf")
    assert subjects.subject[3] not in set(tables["rsfmri_3"].subject)
    assert tables["rsfmri_0"].equals(clean["rsfmri_0"])
    qc = pd.read_csv(tmp_path / "inf/rsfmri_3.qc", sep="\t", dtype=str)
    assert qc.problem[0] == "1 voxels in the AgeMapper box are NaN or Inf", qc.problem[0]


def test_a_file_problem_concerns_every_contrast_reading_it(tmp_path):
    subjects = _component_cohort(tmp_path / "data")
    missing = subjects.subject[0]  # the first subject: strict stops there, before subject 1
    RS[0].path_for(tmp_path / "data", missing).unlink()
    _run_components(tmp_path / "data", subjects, "skip", tmp_path / "out")
    for c in RS:
        qc = pd.read_csv(tmp_path / f"out/{c.name}.qc", sep="\t", dtype=str)
        assert (qc.contrast == c.name).any() and missing in set(qc.subject)
        assert "file is missing" in set(qc[qc.subject == missing].problem)
    message = rf"subject {missing}, contrast rsfmri_0 \.\.\. rsfmri_3 \(3 contrasts of this file\)"
    with pytest.raises(InputDataError, match=message + r", file .*dr_stage2.nii.gz: file is miss"):
        _run_components(tmp_path / "data", subjects, "strict", tmp_path / "strict")


def test_a_stopped_job_of_several_contrasts_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    subjects = _component_cohort(tmp_path / "data", n=8)
    data = tmp_path / "data"
    _run_components(data, subjects, "skip", tmp_path / "whole")
    checkpoints = [tmp_path / f"ck/{c.name}.cache" for c in RS]
    work = prep._preprocess_subject
    calls = []

    def stop_after_three(targets, i, subject, data_directory):
        calls.append(i)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)  # SLURM's time limit, mid-job
        return work(targets, i, subject, data_directory)

    monkeypatch.setattr(prep, "_preprocess_subject", stop_after_three)
    with pytest.raises(prep.Interrupted, match="stopped by signal 15 after"):
        _run_components(data, subjects, "skip", tmp_path / "out", checkpoints=checkpoints)
    monkeypatch.setattr(prep, "_preprocess_subject", work)
    assert all(Path(f"{c}.journal").exists() for c in checkpoints)
    Path(f"{checkpoints[2]}.journal").unlink()  # one contrast's checkpoint is lost: redone alone
    checkpoints[2].unlink()
    _run_components(data, subjects, "skip", tmp_path / "out", checkpoints=checkpoints)
    for c in RS:
        for ext in ("cache", "tsv", "json", "qc"):
            name = f"{c.name}.{ext}"
            assert (tmp_path / "out" / name).read_bytes() == (
                tmp_path / "whole" / name
            ).read_bytes()
    assert not any(c.exists() for c in checkpoints)


def test_one_component_is_read_alone(tmp_path):
    """A run that selects one component writes its cache only (and reads the one file)."""
    subjects = _component_cohort(tmp_path / "data")
    out = tmp_path / "out"
    preprocess_split(subjects, RS[2], tmp_path / "data", (32, 40, 32), out / "c.cache",
                     out / "c.tsv", out / "c.json")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["c.cache", "c.json", "c.tsv"]
    assert len(VolumeCache(out / "c.cache")) == len(subjects)
