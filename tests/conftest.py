"""Shared fixtures: tiny volumes, caches and subject tables (CPU, seconds)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from agemapper.images.contrasts import Contrast
from agemapper.images.grids import GRIDS
from agemapper.images.nifti import write_volume
from agemapper.images.preprocess import preprocess_split

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """The script ``benchmarks/NAME.py`` as a module (benchmarks/ is no package: its scripts
    run as ``python benchmarks/NAME.py`` from the repo root)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def brain_volume(grid="1mm", value=100.0, seed=0, extra_dims=()):
    """A blocky 'brain' on an FSL grid: zeros outside, noisy values inside."""
    g = GRIDS[grid]
    rng = np.random.default_rng(seed)
    vol = np.zeros(g.shape + tuple(extra_dims), dtype=np.float32)
    s = tuple(slice(n // 5, 4 * n // 5) for n in g.shape)
    inner = vol[s]
    inner[...] = value + rng.standard_normal(inner.shape).astype(np.float32)
    return vol


@pytest.fixture
def t1_contrast():
    return Contrast(
        "T1_nonlinear", "structural", "1mm", "T1/T1_brain_to_MNI.nii.gz", None, "mean", 2.0
    )


@pytest.fixture
def rs_contrast():
    return Contrast(
        "rsfmri_2", "resting fMRI", "2mm", "fMRI/rfMRI_25.dr/dr_stage2.nii.gz", 2, "none", 10.0
    )


def make_subjects(n, sex="female", split="train", start=1000000, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "subject": [str(start + i) for i in range(n)],
            "sex": sex,
            "split": split,
            "half": "",
            "age": rng.uniform(45, 80, n),
        }
    )


def make_cache(tmp_path, name, n, shape=(32, 32, 32), seed=0, signal=True):
    """A cache whose volumes encode age (brightness of a central block), for training tests."""
    from agemapper.io import write_json, write_table

    rng = np.random.default_rng(seed)
    subjects = make_subjects(n, seed=seed, start=2000000 + 1000 * seed)
    arr = rng.standard_normal((n, *shape)).astype(np.float32) * 0.1
    if signal:
        c = tuple(slice(s // 4, 3 * s // 4) for s in shape)
        for i, age in enumerate(subjects.age):
            arr[(i, *c)] += (age - 62) / 10
    from agemapper.images.cache import CacheWriter

    cache = tmp_path / f"{name}.cache"
    with CacheWriter(cache, n, shape) as writer:
        for i, volume in enumerate(arr):
            writer.write(i, volume)
    manifest = subjects.copy()
    manifest.insert(0, "row", np.arange(n))
    write_table(tmp_path / f"{name}.tsv", manifest)
    contract = {
        "contrast": "T1_nonlinear",
        "modality": "structural",
        "resolution": "1mm",
        "data_file": "T1/T1_brain_to_MNI.nii.gz",
        "volume": None,
        "normalise": "mean",
        "scale_factor": 2.0,
    }
    write_json(tmp_path / f"{name}.json", {"contrast": contract, "shape": list(shape)})
    return cache, contract


def write_subject_files(root, contrast, subjects, grid, volume_dims=(), seed=0):
    for i, s in enumerate(subjects.subject):
        vol = brain_volume(grid, 100.0 + i, seed=seed + i, extra_dims=volume_dims)
        write_volume(contrast.path_for(root, s), vol, GRIDS[grid], np.float32)


def preprocess_into(tmp_path, folder, contrast, subjects, shape, **options):
    """Preprocess the subjects' files under ``tmp_path/data`` into ``tmp_path/folder``:
    ``c.cache``, ``c.tsv`` and ``c.json``; ``options`` go to preprocess_split. The manifest."""
    files = [tmp_path / folder / f"c.{ext}" for ext in ("cache", "tsv", "json")]
    return preprocess_split(subjects, contrast, tmp_path / "data", shape, *files, **options)


def preprocess_files(tmp_path, contrast, subjects, shape, grid="1mm", volume_dims=(), threads=1):
    """Write the subjects' files for ``contrast`` and preprocess them into ``tmp_path/cache``:
    ``c.cache``, ``c.tsv`` and ``c.json``; return that folder and the manifest."""
    write_subject_files(tmp_path / "data", contrast, subjects, grid, volume_dims)
    table = preprocess_into(tmp_path, "cache", contrast, subjects, shape, threads=threads)
    return tmp_path / "cache", table


@pytest.fixture
def preprocessed(tmp_path, t1_contrast):
    subjects = make_subjects(4)
    out, table = preprocess_files(tmp_path, t1_contrast, subjects, (40, 48, 40), threads=2)
    return out, table, subjects


TINY_MODEL = {"architecture": "agemapper", "channels": [4, 4, 4, 4, 4], "fully_connected": [8, 4]}
TINY_TRAINING = {"epochs": 2, "batch_size": 4, "learning_rate": 0.01, "loss": "mse"}


def train_tiny(tmp_path, tag: str, training=None, speed=None):
    """One network, 2 epochs on a 32^3 age-coded cache (made once per tmp_path); the Trainer."""
    from agemapper.networks.training import Trainer

    train, val = tmp_path / "train.cache", tmp_path / "val.cache"
    if not train.exists():
        make_cache(tmp_path, "train", 12, shape=(32, 32, 32), seed=1)
        make_cache(tmp_path, "val", 6, shape=(32, 32, 32), seed=2)
    trainer = Trainer(
        train,
        val,
        TINY_MODEL,
        {**TINY_TRAINING, **(training or {})},
        [1],
        ("tiny",),
        tmp_path / f"{tag}.safetensors",
        device="cpu",
        speed=speed,
    )
    trainer.run()
    return trainer


def write_released_splits(tmp_path, small=False):
    """The release's split files ({sex}_{split}.txt + _age.npy, test halves) for 26 subjects."""
    rng = np.random.default_rng(0)
    sid = iter(range(1000000, 1100000))
    for sex in ("female", "male"):
        for split, n in (("train", 6), ("validation", 3), ("test", 4)):
            ids = [str(next(sid)) for _ in range(n)]
            ages = rng.uniform(45, 80, n)
            suffix = "_small" if small else ""
            (tmp_path / f"{sex}_{split}{suffix}.txt").write_text("\n".join(ids) + "\n")
            np.save(tmp_path / f"{sex}_{split}_age{suffix}.npy", ages)
            if split == "test" and not small:
                for half, part in (("A", slice(0, 2)), ("B", slice(2, 4))):
                    (tmp_path / f"{sex}_test{half}.txt").write_text("\n".join(ids[part]))
                    np.save(tmp_path / f"{sex}_test{half}_age.npy", ages[part])
    return tmp_path
