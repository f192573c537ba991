import gzip

import nibabel as nib
import numpy as np
import pytest

from agemapper.errors import InputDataError
from agemapper.images.grids import GRIDS
from agemapper.images.nifti import load_volume, write_volume
from conftest import brain_volume

G1, G2 = GRIDS["1mm"], GRIDS["2mm"]


def test_round_trip_with_quantum(tmp_path):
    vol = brain_volume("2mm", 50.0)
    write_volume(tmp_path / "v.nii.gz", vol, G2, np.int16, quantum=0.1)
    back = load_volume(tmp_path / "v.nii.gz", G2, subject="123")
    assert back.dtype == np.float32
    assert np.abs(back - vol).max() <= 0.05 + 1e-4
    img = nib.load(tmp_path / "v.nii.gz")  # a standard NIfTI for other tools
    assert img.shape == G2.shape and np.allclose(img.affine, G2.affine_array)


def test_4d_volume_selection(tmp_path):
    vol = np.stack([brain_volume("2mm", 10.0 * (k + 1), seed=k) for k in range(5)], axis=-1)
    write_volume(tmp_path / "v.nii.gz", vol, G2, np.float32)
    for k in (0, 3, 4):
        assert np.allclose(load_volume(tmp_path / "v.nii.gz", G2, volume=k), vol[..., k])


def _expect(path, grid, message, volume=None):
    with pytest.raises(InputDataError) as info:
        load_volume(path, grid, volume=volume, subject="1234567", contrast="swi")
    text = str(info.value)
    assert "subject 1234567" in text and str(path) in text and message in text, text


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.nii.gz", G1, "missing")


def test_truncated_gzip(tmp_path):
    write_volume(tmp_path / "v.nii.gz", brain_volume("2mm"), G2, np.float32)
    data = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "v.nii.gz").write_bytes(data[: len(data) // 2])
    _expect(tmp_path / "v.nii.gz", G2, "truncated or corrupt")


def test_truncated_voxel_data(tmp_path):
    write_volume(tmp_path / "v.nii.gz", brain_volume("2mm"), G2, np.float32)
    raw = gzip.decompress((tmp_path / "v.nii.gz").read_bytes())
    (tmp_path / "v.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    _expect(tmp_path / "v.nii.gz", G2, "truncated")


def test_not_a_nifti(tmp_path):
    (tmp_path / "v.nii.gz").write_bytes(gzip.compress(b"hello world" * 100))
    _expect(tmp_path / "v.nii.gz", G2, "not a NIfTI")
    (tmp_path / "w.nii.gz").write_text("plain text, not gzip")
    _expect(tmp_path / "w.nii.gz", G2, "not gzip")


def test_wrong_grid_and_voxel_size(tmp_path):
    write_volume(tmp_path / "v.nii.gz", brain_volume("2mm"), G2, np.float32)
    _expect(tmp_path / "v.nii.gz", G1, "is not the 1mm MNI152 grid")
    img = nib.Nifti1Image(brain_volume("2mm"), np.diag([3.0, 3.0, 3.0, 1.0]))
    nib.save(img, tmp_path / "z.nii.gz")
    _expect(tmp_path / "z.nii.gz", G2, "voxel size")


def test_3d_where_4d_needed_and_too_few_volumes(tmp_path):
    write_volume(tmp_path / "v.nii.gz", brain_volume("2mm"), G2, np.float32)
    _expect(tmp_path / "v.nii.gz", G2, "4D file with volume 3", volume=3)
    vol = np.stack([brain_volume("2mm")] * 2, axis=-1)
    write_volume(tmp_path / "w.nii.gz", vol, G2, np.float32)
    _expect(tmp_path / "w.nii.gz", G2, "has 2 volumes", volume=5)
    _expect(tmp_path / "w.nii.gz", G2, "3D volume is expected")


def test_nan_and_all_zero(tmp_path):
    vol = brain_volume("2mm")
    vol[40, 50, 40] = np.nan
    write_volume(tmp_path / "v.nii.gz", vol, G2, np.float32)
    _expect(tmp_path / "v.nii.gz", G2, "NaN or Inf")
    write_volume(tmp_path / "z.nii.gz", np.zeros(G2.shape), G2, np.float32)
    _expect(tmp_path / "z.nii.gz", G2, "all zeros")
