"""Fast, strict reading (and writing) of UK Biobank NIfTI volumes.

``.nii.gz`` files are decompressed in one call (ISA-L's igzip when the ``isal`` package is
installed, about twice as fast as zlib, else zlib) and parsed from memory by nibabel. Every
problem is reported as an :class:`~agemapper.errors.InputDataError` that names the file (and
the subject, when the caller knows it): missing, truncated or corrupt, not a NIfTI, wrong grid,
3D where 4D is needed, too few volumes, NaN/Inf voxels, or an all-zero volume.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from agemapper.errors import InputDataError
from agemapper.images.grids import Grid
from agemapper.io import write_bytes

_ERRORS: tuple = (OSError, EOFError, zlib.error, ValueError)
try:  # ISA-L: same format, about twice the speed of zlib
    from isal import igzip as _igzip
    from isal.igzip_lib import IsalError

    _ERRORS = (*_ERRORS, IsalError)
except ImportError:  # pragma: no cover - exercised where isal is absent
    _igzip = None


def _decompress(data: bytes) -> bytes:
    if _igzip is not None:
        return _igzip.decompress(data)
    return gzip.decompress(data)


def _compress(data: bytes, level: int) -> bytes:
    if _igzip is not None:
        return _igzip.compress(data, compresslevel=min(level, 3))
    return gzip.compress(data, compresslevel=level, mtime=0)


def read_image(path, subject=None, contrast=None) -> nib.Nifti1Image:
    """Read a NIfTI-1/2 file (``.nii`` or ``.nii.gz``) fully into memory."""
    err = dict(path=Path(path), subject=subject, contrast=contrast)
    return _parse(_read_bytes(Path(path), err), err)


def _read_bytes(path: Path, err: dict) -> bytes:
    """The file's bytes, decompressed (in one call) when it is gzip."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputDataError("file is missing", **err) from None
    except IsADirectoryError:
        raise InputDataError("is a directory, not a NIfTI file", **err) from None
    except OSError as exc:
        raise InputDataError(f"cannot be read ({exc.strerror})", **err) from exc
    if data[:2] == b"\x1f\x8b":
        try:
            data = _decompress(data)
        except _ERRORS as exc:
            raise InputDataError(f"truncated or corrupt gzip data ({exc})", **err) from exc
    elif path.name.endswith(".gz"):
        raise InputDataError("named .gz but is not gzip-compressed", **err)
    return data


def _parse(data: bytes, err: dict) -> nib.Nifti1Image:
    if len(data) < 348:
        raise InputDataError(f"not a NIfTI file (only {len(data)} bytes)", **err)
    for klass in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            img = klass.from_bytes(data)
            break
        except Exception:  # nibabel raises several types for a bad header
            continue
    else:
        raise InputDataError("not a NIfTI file (no valid NIfTI-1/2 header)", **err)
    expected = int(np.prod(img.shape)) * img.get_data_dtype().itemsize
    offset = int(img.header.get_data_offset())
    if len(data) < offset + expected:
        raise InputDataError(
            f"truncated: header promises {expected} bytes of voxels, file holds "
            f"{max(0, len(data) - offset)}",
            **err,
        )
    return img


def load_volume(
    path, grid: Grid, volume: int | None = None, subject=None, contrast=None
) -> np.ndarray:
    """Load one 3D volume as float32 on ``grid``, checked for shape, voxel size and values.

    ``volume`` selects an index along the 4th axis (a 4D file is then required).
    """
    got = read_volumes(path, grid, {contrast: volume}, subject=subject)[contrast]
    if isinstance(got, InputDataError):
        raise got
    return got


def read_volumes(path, grid: Grid, volumes: dict, subject=None, values: bool = True) -> dict:
    """Decode ``path`` once and return each of ``volumes`` from it, checked.

    ``volumes`` maps a contrast name to the index along the 4th axis it reads (``None`` for a
    3D file); the result maps each name to its float32 volume on ``grid`` (Fortran order, as
    in the file), or to the :class:`~agemapper.errors.InputDataError` of that volume alone (4D
    volume missing, NaN/Inf, all zeros). A problem of the file itself (missing, corrupt, not
    NIfTI, wrong grid, voxel size or orientation) raises, naming every contrast that reads it.
    ``values=False`` leaves out the checks of the voxels' values (NaN/Inf, all zeros) for a
    caller that checks the part it uses (preprocessing: the AgeMapper box).
    """
    path = Path(path)
    err = dict(path=path, subject=subject, contrast=contrast_label(list(volumes)))
    data = _read_bytes(path, err)
    img = _parse(data, err)
    shape = tuple(int(s) for s in img.shape)
    if shape[:3] != grid.shape:
        raise InputDataError(
            f"grid {shape[:3]} is not the {grid.name} MNI152 grid {grid.shape}", **err
        )
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if not np.allclose(zooms, grid.voxel_mm, atol=1e-3):
        raise InputDataError(
            f"voxel size {zooms} mm is not {grid.voxel_mm} mm ({grid.name} grid)", **err
        )
    _check_orientation(img, grid, err)
    voxels = _raw_float32(img, data)
    out = {}
    for name, volume in volumes.items():
        try:
            out[name] = _volume(img, voxels, shape, grid, volume, {**err, "contrast": name},
                                values)  # fmt: skip
        except InputDataError as exc:
            out[name] = exc
    return out


def contrast_label(names: list) -> str | None:
    """The contrasts a file-level error concerns: one name, or the first and last of several."""
    names = [n for n in names if n is not None]
    if len(names) <= 2:
        return " and ".join(names) or None
    return f"{names[0]} ... {names[-1]} ({len(names)} contrasts of this file)"


def _raw_float32(img, data: bytes) -> np.ndarray | None:
    """The voxels as a zero-copy float32 view of ``data`` (Fortran order, like nibabel's), when
    the file stores native float32 without scaling (UK Biobank's images); else None."""
    proxy = img.dataobj  # what nibabel reads: its dtype, offset and scaling
    if proxy.dtype != np.dtype(np.float32) or not proxy.dtype.isnative:
        return None
    if not (proxy.slope == 1 and proxy.inter == 0):
        return None
    count = int(np.prod(proxy.shape))
    return np.frombuffer(data, np.float32, count, proxy.offset).reshape(proxy.shape, order="F")


def _volume(img, voxels, shape: tuple, grid: Grid, volume: int | None, err: dict,
            values: bool = True) -> np.ndarray:  # fmt: skip
    """One 3D volume of a parsed image: float32 on ``grid``; with ``values``, finite and not
    all zeros."""
    # Trailing singleton dimensions (x, y, z, 1) are harmless in NIfTI.
    while len(shape) > 3 and shape[-1] == 1 and (volume is None or len(shape) > 4):
        shape = shape[:-1]
    proxy = img.dataobj if voxels is None else voxels
    if volume is None:
        if len(shape) != 3:
            raise InputDataError(f"is {len(shape)}D {shape}; a 3D volume is expected", **err)
        arr = np.asarray(proxy, dtype=np.float32).reshape(grid.shape)
    else:
        if len(shape) != 4:
            raise InputDataError(
                f"is {len(shape)}D {shape}; a 4D file with volume {volume} is expected", **err
            )
        if volume >= shape[3]:
            raise InputDataError(
                f"has {shape[3]} volumes; volume {volume} (0-based) was asked for", **err
            )
        arr = np.asarray(proxy[..., volume], dtype=np.float32).reshape(grid.shape)
    if not values:
        return arr
    # one vectorised pass for the common case: a finite, non-zero sum means every voxel is
    # finite and not all are zero; otherwise the exact checks say which problem it is
    total = arr.sum()
    if not np.isfinite(total) or total == 0:
        finite = np.isfinite(arr)
        if not finite.all():
            raise InputDataError(f"{int((~finite).sum())} voxels are NaN or Inf", **err)
        if not arr.any():
            raise InputDataError("volume is all zeros", **err)
    return arr


# FSL writes MNI152 affines as float32 of exact values; anything further off is another space.
AFFINE_TOLERANCE = 1e-3  # mm in the translation, and in each entry of the 3x3 part


def image_affine(img) -> tuple[np.ndarray | None, str]:
    """The affine the header declares (sform, else qform) and which one, or None if neither."""
    header = img.header
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    if sform_code > 0:
        return np.asarray(header.get_sform(), dtype=float), f"sform (code {sform_code})"
    if qform_code > 0:
        return np.asarray(header.get_qform(), dtype=float), f"qform (code {qform_code})"
    return None, "no sform or qform"


def _check_orientation(img, grid: Grid, err: dict) -> None:
    """The voxel-to-world affine must be the grid's MNI152 affine: no flip, shift or rotation.

    Grid shape and voxel size alone accept a left-right flipped image, a scanner-space image
    resampled to the same shape, or a shifted origin, and the network would silently see
    another brain position.
    """
    affine, source = image_affine(img)
    expected = grid.affine_array
    if affine is None:
        raise InputDataError(
            f"header has neither an sform nor a qform: its orientation is unknown (the {grid.name} "
            "MNI152 grid is expected)",
            **err,
        )
    if np.allclose(affine, expected, atol=AFFINE_TOLERANCE):
        return
    flips = [
        "xyz"[i]
        for i in range(3)
        if np.sign(affine[i, i]) != np.sign(expected[i, i]) and abs(affine[i, i]) > 1e-6
    ]
    rotation_ok = np.allclose(np.abs(affine[:3, :3]), np.abs(expected[:3, :3]), atol=1e-3)
    if flips and rotation_ok:
        what = f"the {', '.join(flips)} axis is flipped"
    elif rotation_ok and np.allclose(affine[:3, :3], expected[:3, :3], atol=AFFINE_TOLERANCE):
        shift = affine[:3, 3] - expected[:3, 3]
        what = f"the origin is shifted by ({', '.join(f'{v:+.3g}' for v in shift)}) mm"
    else:
        what = "it is rotated, sheared or scaled (not the MNI152 axes)"
    found = np.array2string(affine[:3], precision=3, suppress_small=True, separator=",")
    raise InputDataError(
        f"orientation: {what}; its {source} affine {' '.join(found.split())} is not the "
        f"{grid.name} MNI152 affine (registered to MNI152 with FSL's standard grid?)",
        **err,
    )


def nifti_bytes(data: np.ndarray, grid: Grid, quantum: float | None = None) -> bytes:
    """A single-file NIfTI-1 image of ``data`` as stored (no rescaling), slope ``quantum``."""
    data = np.asarray(data)
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_zooms((grid.voxel_mm,) * 3 + (1.0,) * (data.ndim - 3))
    header.set_xyzt_units("mm", "sec")
    header.set_qform(grid.affine_array, code=4)  # MNI152
    header.set_sform(grid.affine_array, code=4)
    header.set_slope_inter(1.0 if quantum is None else quantum, 0.0)
    header["vox_offset"] = 352
    return header.binaryblock + b"\x00" * 4 + data.tobytes(order="F")


def write_volume(
    path, data: np.ndarray, grid: Grid, dtype=np.int16, quantum: float | None = None, level: int = 1
) -> None:
    """Write ``data`` (3D or 4D) on ``grid`` as NIfTI-1, atomically.

    Integer types store ``round(data / quantum)`` with ``scl_slope = quantum`` (a quantum near a
    third of the noise level keeps files small); data already of that integer type is taken as
    those stored values. Without ``quantum`` nibabel picks the scaling.
    """
    data = np.asarray(data)
    if quantum is not None and data.dtype == np.dtype(dtype):
        raw = nifti_bytes(data, grid, quantum)  # already stored values: round(value / quantum)
    elif quantum is not None and np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        q = np.clip(np.rint(data.astype(np.float32) / np.float32(quantum)), info.min, info.max)
        raw = nifti_bytes(q.astype(dtype), grid, quantum)
    else:
        img = nib.Nifti1Image(data.astype(np.float32), grid.affine_array)
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_qform(grid.affine_array, code=4)
        img.header.set_sform(grid.affine_array, code=4)
        img.set_data_dtype(dtype)
        raw = img.to_bytes()
    write_bytes(path, _compress(raw, level) if str(path).endswith(".gz") else raw)
