"""Preprocessing: NIfTI files of one contrast, sex and split -> one cache the trainer reads fast.

Per subject (the AgeMapper recipe): load, take volume k of a 4D file, crop to the AgeMapper box,
divide by the mean of the cropped volume (T1/T2 contrasts, zeros included), divide by the
contrast's scale factor, and bring it to the training grid: area averaging when a reduced demo
grid is smaller than the crop, identity for 1 mm at full size. A 2 mm contrast at full size is
stored at 2 mm (80x96x80, 8x fewer bytes) and upsampled x2 (trilinear, aligned corners, as the
original network did) on the training device when read: :func:`agemapper.images.cache.to_grid`.

The cache (:mod:`agemapper.images.cache`: non-zero mask + float16 voxels, rounded to a relative
2^-11, or float32 voxels as the original read them: ``dtype``) comes with a manifest
TSV (one row per subject: row index, age, per-volume statistics) and a JSON sidecar describing
the input contract (contrast, grids, normalisation, scale factor, training and stored shapes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from agemapper import __version__
from agemapper.errors import InputDataError
from agemapper.images.cache import CacheWriter, VolumeCache
from agemapper.images.contrasts import Contrast
from agemapper.images.grids import get_grid
from agemapper.images.nifti import load_volume
from agemapper.io import write_json, write_table
from agemapper.qc import QCLog

log = logging.getLogger(__name__)

CACHE_FORMAT = "agemapper-cache/1"
STAT_COLUMNS = [
    "crop_mean",
    "max_normalised",
    "p999_normalised",
    "max_scaled",
    "nonzero",
    "cache_bytes",
]


def resample(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a 3D volume to ``shape``: trilinear (aligned corners) up, area average down."""
    shape = tuple(int(s) for s in shape)
    if volume.shape == shape:
        return np.array(volume, dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    if all(t <= s for t, s in zip(shape, volume.shape, strict=True)):
        y = F.adaptive_avg_pool3d(x, shape)
    else:
        y = F.interpolate(x, size=shape, mode="trilinear", align_corners=True)
    return y[0, 0].numpy()


def stored_shape(crop_shape: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    """The grid a cache stores: the training grid, unless that would upsample the crop (then
    the crop itself, upsampled on the training device)."""
    shape = tuple(int(s) for s in shape)
    if all(t <= c for t, c in zip(shape, crop_shape, strict=True)):
        return shape
    return tuple(crop_shape)


def preprocess_volume(
    volume: np.ndarray, contrast: Contrast, shape: Sequence[int]
) -> tuple[np.ndarray, dict]:
    """Crop, normalise, scale and resample one volume; also return its statistics.

    Resampling is linear, so the volume is resampled first and normalised on the (small)
    result: the same numbers, without two passes over the full-resolution crop.
    """
    grid = get_grid(contrast.resolution)
    cropped = volume[grid.crop_slices]
    crop_mean = float(cropped.mean(dtype=np.float64))
    norm = 1.0
    if contrast.normalise == "mean":
        if crop_mean <= 0:
            raise ValueError(f"mean of the cropped volume is {crop_mean:g}; cannot normalise")
        norm = 1.0 / crop_mean
    out = resample(cropped, shape)
    out *= np.float32(norm / contrast.scale_factor)
    sample = cropped[::2, ::2, ::2]  # QC statistics on every 8th voxel are plenty
    inside = sample[sample != 0]
    stats = {
        "crop_mean": crop_mean,
        "max_normalised": float(cropped.max()) * norm,
        "p999_normalised": float(np.percentile(inside, 99.9)) * norm if inside.size else 0.0,
        "max_scaled": float(out.max()),
        "nonzero": inside.size / sample.size,
    }
    return out, stats


def cache_paths(cache) -> dict[str, Path]:
    cache = Path(cache)
    stem = cache.with_suffix("")
    return {"cache": cache, "manifest": Path(f"{stem}.tsv"), "info": Path(f"{stem}.json")}


def preprocess_split(
    subjects: pd.DataFrame,
    contrast: Contrast,
    data_directory,
    shape: Sequence[int],
    cache,
    manifest,
    info,
    threads: int = 1,
    qc: str = "strict",
    qc_table=None,
    dtype: str = "float16",
) -> pd.DataFrame:
    """Read every subject's file for one contrast and write the cache, manifest and sidecar.

    ``subjects`` holds the rows of one sex and split (subject, sex, split, half, age). A bad
    file stops the job under ``qc="strict"``; under ``skip`` the subject is left out (its cache
    row stays zero and is absent from the manifest) and recorded in ``qc_table``. ``dtype`` is
    the cache's value type: ``float16`` (half the bytes) or ``float32`` (the original's input).
    """
    shape = tuple(int(s) for s in shape)
    n = len(subjects)
    if n == 0:
        raise ValueError(f"no subjects to preprocess for {contrast.name}")
    grid = get_grid(contrast.resolution)
    stored = stored_shape(grid.crop_shape, shape)
    ids = subjects.subject.astype(str).tolist()
    first = subjects.iloc[0]
    qclog = QCLog(qc, "preprocess", contrast=contrast.name, sex=first.sex, split=first.split)

    def work(i: int):
        path = contrast.path_for(data_directory, ids[i])
        try:
            vol = load_volume(path, grid, contrast.volume, subject=ids[i], contrast=contrast.name)
            try:
                return preprocess_volume(vol, contrast, stored)
            except ValueError as exc:
                raise InputDataError(
                    str(exc), path=path, subject=ids[i], contrast=contrast.name
                ) from exc
        except InputDataError as exc:
            return exc

    stats = {}
    start = time.monotonic()
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over subjects instead; restored for the caller
    try:
        with CacheWriter(cache, n, stored, dtype=dtype) as writer:
            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
                for i, result in enumerate(pool.map(work, range(n))):
                    if isinstance(result, InputDataError):
                        qclog.handle(result)  # raises under the strict policy
                    else:
                        volume, stats[i] = result
                        stats[i]["cache_bytes"] = writer.write(i, volume)
                    if (i + 1) % max(1, n // 10) == 0 or i + 1 == n:
                        rate = (i + 1) / (time.monotonic() - start)
                        log.info(
                            "%s: %d/%d subjects, %.1f subjects/s, ETA %.0f s",
                            contrast.name,
                            i + 1,
                            n,
                            rate,
                            (n - i - 1) / rate,
                        )
            if not stats:
                raise InputDataError(
                    f"every one of the {n} {first.sex} {first.split} subjects failed QC "
                    f"(first: {qclog.rows[0]['problem']})",
                    contrast=contrast.name,
                )
    finally:
        torch.set_num_threads(torch_threads)
    rows = sorted(stats)
    table = subjects[["subject", "sex", "split", "half", "age"]].reset_index(drop=True)
    table = table.iloc[rows].reset_index(drop=True)
    table.insert(0, "row", rows)
    table = pd.concat([table, pd.DataFrame([stats[i] for i in rows], columns=STAT_COLUMNS)], axis=1)
    write_table(manifest, table)
    if qc_table is not None:
        write_table(qc_table, qclog.frame())
    if len(qclog):
        log.warning("%s: %d of %d subjects skipped by QC", contrast.name, len(qclog), n)
    write_json(
        info,
        {
            "contrast": contrast.as_dict(),
            "source_grid": {"name": grid.name, "shape": grid.shape, "crop": grid.crop},
            "shape": shape,
            "format": CACHE_FORMAT,
            "stored_shape": stored,
            "bytes_per_volume": writer.stored_bytes / max(len(rows), 1),
            "dense_float16_bytes_per_volume": 2 * int(np.prod(stored)),
            "dtype": dtype,
            "subjects": len(rows),
            "skipped": len(qclog),
            "agemapper_version": __version__,
        },
    )
    return table


def open_cache(cache) -> tuple[VolumeCache, pd.DataFrame]:
    """Open a cache and read its manifest; ``manifest.row`` indexes the cache's rows."""
    paths = cache_paths(cache)
    arr = VolumeCache(paths["cache"])
    manifest = pd.read_csv(paths["manifest"], sep="\t", dtype={"subject": str, "half": str})
    manifest["half"] = manifest["half"].fillna("")
    if len(manifest) and (manifest.row.max() >= arr.shape[0] or manifest.row.min() < 0):
        raise ValueError(f"{paths['cache']}: manifest rows outside the {arr.shape[0]} volumes")
    return arr, manifest


def estimate_scale_factors(manifests: dict[str, pd.DataFrame], table: dict[str, Contrast]):
    """Scale factors recomputed from training manifests, beside the table's values.

    Our estimator is the mean over training subjects of each normalised volume's maximum (the
    release's values behave like it: 1.0 for binary lesion masks and ~1.0 for FA).
    """
    rows = []
    for name, manifest in manifests.items():
        mx = manifest["max_normalised"].to_numpy(dtype=float)
        ref = table[name].scale_factor
        est = float(mx.mean())
        rows.append(
            {
                "contrast": name,
                "subjects": len(mx),
                "table_scale_factor": ref,
                "estimated_scale_factor": est,
                "ratio": est / ref,
                "max_of_max": float(mx.max()),
                "median_p999": float(np.median(manifest["p999_normalised"])),
            }
        )
    return pd.DataFrame(rows)
