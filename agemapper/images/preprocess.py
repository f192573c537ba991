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

import hashlib
import json
import logging
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from agemapper import __version__
from agemapper.errors import AgeMapperError, InputDataError
from agemapper.images.cache import CacheWriter, VolumeCache
from agemapper.images.contrasts import Contrast
from agemapper.images.grids import get_grid
from agemapper.images.intensity import (
    MIN_REFERENCE,
    cohort_shift,
    subject_outliers,
    summarise,
    volume_statistics,
)
from agemapper.images.nifti import load_volume
from agemapper.io import write_json, write_table
from agemapper.progress import Progress
from agemapper.qc import QCLog

log = logging.getLogger(__name__)

CACHE_FORMAT = "agemapper-cache/1"
STAT_COLUMNS = [
    "crop_mean",
    "max_normalised",
    "p999_normalised",
    "max_scaled",
    "nonzero",
    "median_abs",
    "p99_abs",
    "cache_bytes",
]
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504: the cache stores float16


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
    peak = float(np.abs(out).max())
    if not np.isfinite(peak) or peak > FLOAT16_MAX:
        raise ValueError(
            f"values reach {peak:.3g} after normalisation and scaling, beyond the float16 range "
            f"of the cache ({FLOAT16_MAX:g}): a wrong intensity scale (or scale factor)?"
        )
    sample = cropped[::2, ::2, ::2]  # QC statistics on every 8th voxel are plenty
    inside = sample[sample != 0]
    stats = {
        "crop_mean": crop_mean,
        "max_normalised": float(cropped.max()) * norm,
        "p999_normalised": float(np.percentile(inside, 99.9)) * norm if inside.size else 0.0,
        "max_scaled": float(out.max()),
        **volume_statistics(out, sample),
    }
    return out, stats


def cache_paths(cache) -> dict[str, Path]:
    cache = Path(cache)
    stem = cache.with_suffix("")
    return {"cache": cache, "manifest": Path(f"{stem}.tsv"), "info": Path(f"{stem}.json")}


class Interrupted(AgeMapperError):
    """Preprocessing stopped on a signal (SLURM's time limit); the rerun resumes."""


def _remove_stale_temporaries(paths) -> None:
    """Temporary files an earlier, killed run of this job left next to its outputs."""
    for path in paths:
        path = Path(path)
        for stale in path.parent.glob(f".{path.name}.*.tmp*"):
            log.info("removing %s, left by an interrupted earlier run", stale)
            stale.unlink(missing_ok=True)


def _source_stamp(path) -> list | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


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
    reference=None,
    checkpoint=None,
) -> pd.DataFrame:
    """Read every subject's file for one contrast and write the cache, manifest and sidecar.

    ``subjects`` holds the rows of one sex and split (subject, sex, split, half, age). A bad
    file stops the job under ``qc="strict"``; under ``skip`` the subject is left out (its cache
    row stays zero and is absent from the manifest) and recorded in ``qc_table``. ``dtype`` is
    the cache's value type: ``float16`` (half the bytes) or ``float32`` (the original's input).

    Intensities are checked against a reference (:mod:`agemapper.images.intensity`): the
    training split's manifest given as ``reference`` (for validation and test), else the split
    itself; an outlier subject is bad input like a bad file, a whole split off the reference
    stops the job. With ``checkpoint`` (a path outside the outputs) the cache is written there
    with a journal, so that a job stopped by SIGTERM/SIGINT (logged, at the next subject) or
    killed resumes where it stopped when rerun.
    """
    shape = tuple(int(s) for s in shape)
    n = len(subjects)
    if n == 0:
        raise InputDataError(
            f"no subjects to preprocess for {contrast.name}", contrast=contrast.name
        )
    grid = get_grid(contrast.resolution)
    stored = stored_shape(grid.crop_shape, shape)
    ids = subjects.subject.astype(str).tolist()
    sex, split = subjects.sex.iloc[0], "+".join(pd.unique(subjects.split))
    qclog = QCLog(qc, "preprocess", contrast=contrast.name, sex=sex, split=split)
    where = f"{contrast.name} {sex} {split}"
    _remove_stale_temporaries([cache, manifest, info, *([qc_table] if qc_table else [])])
    sources = [contrast.path_for(data_directory, s) for s in ids]

    def work(i: int):
        path = sources[i]
        try:
            stamp = _source_stamp(path)
            vol = load_volume(path, grid, contrast.volume, subject=ids[i], contrast=contrast.name)
            try:
                return (*preprocess_volume(vol, contrast, stored), stamp)
            except ValueError as exc:
                raise InputDataError(
                    str(exc), path=path, subject=ids[i], contrast=contrast.name
                ) from exc
        except InputDataError as exc:
            return exc

    fingerprint = hashlib.sha256(
        json.dumps(
            [contrast.as_dict(), list(stored), list(shape), ids,
             str(Path(data_directory).resolve()), __version__],
            default=str,
        ).encode()
    ).hexdigest()  # fmt: skip

    def still_valid(row: int, extra: dict) -> bool:  # a resumed row whose file is unchanged
        return extra.get("source") == _source_stamp(sources[row])

    stats: dict[int, dict] = {}
    stopped: list[int] = []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over subjects instead; restored for the caller
    handlers = _catch_signals(stopped)
    try:
        with CacheWriter(cache, n, stored, partial=checkpoint, fingerprint=fingerprint,
                         keep=still_valid, dtype=dtype) as writer:  # fmt: skip
            for i, extra in writer.done.items():
                stats[i] = extra["stats"]
            if writer.done:
                log.info("%s: resumed with %d of %d subjects done", where, len(writer.done), n)
            todo = [i for i in range(n) if i not in writer.done]
            progress = Progress(where, n, "subject", log=log, done=len(writer.done))
            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
                for k, (i, result) in enumerate(zip(todo, pool.map(work, todo), strict=True)):
                    if isinstance(result, InputDataError):
                        qclog.handle(result)  # raises under the strict policy
                    else:
                        volume, stats[i], stamp = result
                        stats[i]["cache_bytes"] = writer.write(
                            i, volume, {"stats": stats[i], "source": stamp}
                        )
                    progress.update(len(writer.done) + k + 1)
                    if stopped:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise Interrupted(
                            f"{where}: stopped by signal {stopped[0]} after {len(stats)}/{n} "
                            "subjects; "
                            + ("the rerun resumes there" if checkpoint else "rerun to redo it")
                        )
            if not stats:
                raise InputDataError(
                    f"every one of the {n} {sex} {split} subjects failed QC "
                    f"(first: {qclog.rows[0]['problem']})",
                    contrast=contrast.name,
                )
            table = _manifest(subjects, stats)
            table = _check_intensities(table, reference, qclog, contrast, sources, where)
            if table.empty:
                raise InputDataError(
                    f"every one of the {n} {sex} {split} subjects failed QC "
                    f"(first: {qclog.rows[0]['problem']})",
                    contrast=contrast.name,
                )
    finally:
        torch.set_num_threads(torch_threads)
        _restore_signals(handlers)
    write_table(manifest, table)
    if qc_table is not None:
        write_table(qc_table, qclog.table())
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
            "bytes_per_volume": writer.stored_bytes / max(len(stats), 1),
            "dense_float16_bytes_per_volume": 2 * int(np.prod(stored)),
            "dtype": dtype,
            "subjects": len(table),
            "skipped": len(qclog),
            "intensity": summarise(table),
            "agemapper_version": __version__,
        },
    )
    return table


def _manifest(subjects: pd.DataFrame, stats: dict[int, dict]) -> pd.DataFrame:
    rows = sorted(stats)
    table = subjects[["subject", "sex", "split", "half", "age"]].reset_index(drop=True)
    table = table.iloc[rows].reset_index(drop=True)
    table.insert(0, "row", rows)
    table["subject"] = table["subject"].astype(str)
    return pd.concat([table, pd.DataFrame([stats[i] for i in rows], columns=STAT_COLUMNS)], axis=1)


def _check_intensities(table, reference, qclog, contrast, sources, where) -> pd.DataFrame:
    """Leave out (skip) or stop at (strict) subjects whose intensities are off the reference."""
    if reference is None:
        ref = summarise(table)
    elif isinstance(reference, dict):
        ref = reference
    else:
        ref = summarise(pd.read_csv(reference, sep="\t", dtype={"subject": str}))
    if any(r["n"] < MIN_REFERENCE for r in ref.values()):
        log.info("%s: fewer than %d reference subjects, intensities not checked", where,
                 MIN_REFERENCE)  # fmt: skip
        return table
    if reference is not None:
        shifted = cohort_shift(table, ref)
        if shifted:
            raise InputDataError(f"{where}: " + "; ".join(shifted), contrast=contrast.name)
    outliers = subject_outliers(table, ref)
    if outliers.empty:
        return table
    by_subject = outliers.groupby("subject", sort=False).problem.agg("; ".join)
    rows = table.set_index("subject").row
    for subject, problem in by_subject.items():
        if qclog.policy == "strict" and len(by_subject) > 1:
            problem += f" ({len(by_subject) - 1} more subjects are outliers)"
        qclog.handle(
            InputDataError(problem, subject=subject, contrast=contrast.name,
                           path=sources[int(rows[subject])])
        )  # fmt: skip
    return table[~table.subject.isin(by_subject.index)].reset_index(drop=True)


def _catch_signals(stopped: list) -> dict:
    """SIGTERM/SIGINT set a flag the loop checks after each subject (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum, frame):  # noqa: ARG001
        if not stopped:
            log.warning("received signal %d; stopping after the subject in progress", signum)
        stopped.append(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in previous:
        signal.signal(s, on_signal)
    return previous


def _restore_signals(previous: dict) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


def open_cache(cache) -> tuple[VolumeCache, pd.DataFrame]:
    """Open a cache and read its manifest; ``manifest.row`` indexes the cache's rows."""
    paths = cache_paths(cache)
    arr = VolumeCache(paths["cache"])
    manifest = pd.read_csv(paths["manifest"], sep="\t", dtype={"subject": str, "half": str})
    manifest["half"] = manifest["half"].fillna("")
    if len(manifest) and (manifest.row.max() >= arr.shape[0] or manifest.row.min() < 0):
        raise ValueError(f"{paths['cache']}: manifest rows outside the {arr.shape[0]} volumes")
    return arr, manifest


# estimate / table ratios of scale factors beyond these are flagged (a factor 1.5 either way)
PLAUSIBLE_SCALE_RATIO = (1 / 1.5, 1.5)


def estimate_scale_factors(manifests: dict[str, pd.DataFrame], table: dict[str, Contrast]):
    """Scale factors recomputed from training manifests, beside the table's values.

    Our estimator is the mean over training subjects of each normalised volume's maximum (the
    release's values behave like it: 1.0 for binary lesion masks and ~1.0 for FA).

    A ratio (estimate / table) outside ``PLAUSIBLE_SCALE_RATIO`` is flagged in ``flag``: the
    network would then see intensities on another scale than the table's factor implies (a
    wrong file, another software version's units, or a table meant for other data).
    """
    lo, hi = PLAUSIBLE_SCALE_RATIO
    rows = []
    for name, manifest in manifests.items():
        mx = manifest["max_normalised"].to_numpy(dtype=float)
        ref = table[name].scale_factor
        est = float(mx.mean())
        ratio = est / ref
        rows.append(
            {
                "contrast": name,
                "subjects": len(mx),
                "table_scale_factor": ref,
                "estimated_scale_factor": est,
                "ratio": ratio,
                "max_of_max": float(mx.max()),
                "median_p999": float(np.median(manifest["p999_normalised"])),
                "flag": ""
                if lo <= ratio <= hi
                else f"implausible: the estimate is {ratio:.2f} x the table's "
                f"(plausible {lo:.2f}-{hi:.2f})",
            }
        )
    return pd.DataFrame(rows)
