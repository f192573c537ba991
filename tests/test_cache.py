"""The packed volume cache, batches read from it, and augmentation on the device."""

import json

import numpy as np
import pytest
import torch

from agemapper.errors import InputDataError
from agemapper.images.cache import CacheWriter, VolumeCache, decode_numpy, decode_torch
from agemapper.images.preprocess import preprocess_volume
from agemapper.networks.batches import BatchSource, augment
from agemapper.networks.training import fast_path
from conftest import make_cache, make_subjects, preprocess_files, train_tiny


def _volumes(n=5, shape=(7, 9, 11), seed=0):
    rng = np.random.default_rng(seed)
    vols = rng.standard_normal((n, *shape)).astype(np.float16)
    vols[rng.random(vols.shape) < 0.6] = 0  # background
    vols[1] = 0  # an all-zero volume
    vols[2, 0, 0, 0] = np.nan  # NaN is kept (QC sees it), not mistaken for background
    vols[3] = 1.5  # no background at all
    return vols


def test_cache_round_trip_is_exact(tmp_path):
    vols = _volumes()
    with CacheWriter(tmp_path / "c.cache", len(vols) + 1, vols.shape[1:]) as w:
        for i in (3, 0, 2, 1, 4):  # any order; row 5 is never written (a QC skip)
            w.write(i, vols[i])
    cache = VolumeCache(tmp_path / "c.cache")
    assert cache.shape == (6, 7, 9, 11) and cache.dtype == np.float16
    out = cache[np.arange(5)]
    np.testing.assert_array_equal(out, vols)  # NaN positions compare equal too
    np.testing.assert_array_equal(cache[4], vols[4])
    assert cache.stored_bytes([1])[0] == (7 * 9 * 11 + 7) // 8  # mask only
    with pytest.raises(InputDataError, match=r"rows \[5\] were never written"):
        cache[[0, 5]]
    masks, values, _ = cache.packed([4, 0, 2])
    dense = decode_torch(torch.from_numpy(masks), torch.from_numpy(values), (7, 9, 11))
    np.testing.assert_array_equal(dense.numpy(), decode_numpy(masks, values, (7, 9, 11)))
    np.testing.assert_array_equal(dense.numpy(), vols[[4, 0, 2]])


def test_cache_is_atomic_and_bad_files_are_named(tmp_path):
    path = tmp_path / "c.cache"
    with pytest.raises(RuntimeError), CacheWriter(path, 2, (4, 4, 4)) as w:
        w.write(0, np.ones((4, 4, 4)))
        raise RuntimeError("killed mid-write")
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="shape"), CacheWriter(path, 1, (4, 4, 4)) as w:
        w.write(0, np.ones((4, 4, 5)))
    path.write_bytes(b"\x93NUMPY not a cache")
    with pytest.raises(InputDataError, match=rf"{path}.*bad magic"):
        VolumeCache(path)


def test_brain_volume_at_full_size_fits_in_5_mb(tmp_path, t1_contrast):
    """A brain-extracted 1 mm volume: the mask bit plus float16 inside the brain."""
    out, table = preprocess_files(tmp_path, t1_contrast, make_subjects(1), (160, 192, 160))
    info = json.loads((out / "c.json").read_text())
    assert info["stored_shape"] == [160, 192, 160] and info["format"] == "agemapper-cache/1"
    assert info["dense_float16_bytes_per_volume"] == 2 * 160 * 192 * 160
    assert table.cache_bytes[0] == info["bytes_per_volume"] < 5e6


def test_2mm_is_stored_at_2mm_and_upsampled_when_read(tmp_path, rs_contrast):
    subjects = make_subjects(2)
    out, _ = preprocess_files(tmp_path, rs_contrast, subjects, (160, 192, 160), "2mm", (4,))
    files = [out / f"c.{e}" for e in ("cache", "tsv", "json")]
    info = json.loads(files[2].read_text())
    assert info["stored_shape"] == [80, 96, 80] and info["shape"] == [160, 192, 160]
    source = BatchSource(files[0], torch.device("cpu"), preload_bytes=0)
    x, age = source.get(torch.tensor([1, 0]))
    assert x.shape == (2, 1, 160, 192, 160) and x.dtype == torch.float32
    # the same numbers as upsampling at preprocessing time (float16 storage apart)
    from agemapper.images.grids import get_grid
    from agemapper.images.nifti import load_volume

    path = rs_contrast.path_for(tmp_path / "data", subjects.subject[1])
    vol = load_volume(path, get_grid("2mm"), rs_contrast.volume)
    direct, _ = preprocess_volume(vol, rs_contrast, (160, 192, 160))
    np.testing.assert_allclose(x[0, 0].numpy(), direct, atol=2e-3 * np.abs(direct).max())
    np.testing.assert_allclose(age.numpy(), subjects.age[[1, 0]].to_numpy(), rtol=1e-6)


def test_streamed_prefetched_and_preloaded_batches_agree(tmp_path):
    cache, _ = make_cache(tmp_path, "t", 11, shape=(8, 10, 8), seed=4)
    preloaded = BatchSource(cache, torch.device("cpu"), preload_bytes=1e9)
    streamed = BatchSource(cache, torch.device("cpu"), preload_bytes=0, prefetch=3)
    assert preloaded.preloaded is not None and streamed.preloaded is None
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    indices = [order[s : s + 4] for s in range(0, 11, 4)]
    got = list(streamed.batches(iter(indices)))
    assert len(got) == 3
    for index, (x, y) in zip(indices, got, strict=True):
        xp, yp = preloaded.get(index)
        assert torch.equal(x, xp) and torch.equal(y, yp)
    # a consumer that stops early (SIGTERM mid-epoch) leaves no reader thread behind
    batches = streamed.batches(iter(indices))
    next(batches)
    batches.close()


def _augment_reference(x, generator, max_shift, mirror):
    """The original's per-sample code (utils/data_utils.py, DynamicDataMapper.__getitem__) on
    our draws: np.flip(axis 0) when mirrored, then np.roll per axis, then the wrapped z slices
    zeroed when the z shift is negative."""
    n = x.shape[0]
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 3), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(n):
        X_volume = x[i, 0].numpy()
        if mirror and bool(flips[i]):
            X_volume = np.flip(X_volume, 0)
        x_shift, y_shift, z_shift = (int(s) for s in shifts[i])
        X_volume = np.roll(X_volume, x_shift, axis=0)
        X_volume = np.roll(X_volume, y_shift, axis=1)
        X_volume = np.roll(X_volume, z_shift, axis=2)
        if z_shift < 0:
            X_volume[:, :, z_shift:] = 0
        out[i, 0] = X_volume
    return torch.from_numpy(out)


@pytest.mark.parametrize("max_shift, mirror", [(2, False), (3, True), (0, True)])
def test_batched_augmentation_equals_the_per_sample_loop(max_shift, mirror):
    x = torch.randn(9, 1, 7, 8, 9)
    ours = augment(x, torch.Generator().manual_seed(5), max_shift, mirror)
    ref = _augment_reference(x, torch.Generator().manual_seed(5), max_shift, mirror)
    assert torch.equal(ours, ref)


def test_fast_path_is_cuda_only_unless_asked():
    cpu = torch.device("cpu")
    assert fast_path(cpu, {}, {}) == {
        "bf16": False,
        "channels_last": False,
        "compile": False,
        "prefetch": 2,
        "first_conv": "cudnn",
    }
    assert fast_path(cpu, {"precision": "bf16"}, {})["bf16"]
    assert not fast_path(cpu, {"precision": "auto"}, {})["bf16"]
    cuda = fast_path(torch.device("cuda"), {"precision": "auto"}, {"cudnn_benchmark": False})
    assert cuda["bf16"] and cuda["channels_last"]
    # fp32 unless asked, as the original trained (issue 13, item 5)
    assert not fast_path(torch.device("cuda"), {}, {})["bf16"]
    assert not fast_path(torch.device("cuda"), {"precision": "fp32"}, {})["bf16"]


def test_bf16_autocast_trains_on_cpu(tmp_path):
    runs = {
        p: train_tiny(tmp_path, p, training={"precision": p}).reps[0].history[-1]["val_mae"]
        for p in ("fp32", "bf16")
    }
    assert np.isfinite(runs["bf16"]) and runs["bf16"] != runs["fp32"]
    assert runs["bf16"] == pytest.approx(runs["fp32"], rel=0.25)
