"""Preprocessing: the NIfTI files of one sex and split -> a cache per contrast, decoded once.

Per subject (the AgeMapper recipe): load, take volume k of a 4D file, crop to the AgeMapper box,
divide by the mean of the cropped volume (T1/T2 contrasts, zeros included), divide by the
contrast's scale factor, and bring it to the training grid: area averaging when a reduced demo
grid is smaller than the crop, identity for 1 mm at full size. A 2 mm contrast at full size is
stored at 2 mm (80x96x80, 8x fewer bytes) and upsampled x2 (trilinear, aligned corners, as the
original network did) on the training device when read: :func:`agemapper.images.cache.to_grid`.

One job preprocesses every contrast given to :func:`preprocess_contrasts` and decodes each
subject's file once for all the contrasts that read it: the 25 resting-state maps are the 25
volumes of one 4D file, decompressed once per subject instead of 25 times.
:func:`preprocess_split` is the same for one contrast.

The cache (:mod:`agemapper.images.cache`: non-zero mask + float16 voxels, rounded to a relative
2^-11, or float32 voxels as the original read them: ``dtype``) comes with a manifest
TSV (one row per subject: row index, age, per-volume statistics) and a JSON sidecar describing
the input contract (contrast, grids, normalisation, scale factor, training and stored shapes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import signal
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from agemapper import __version__
from agemapper.errors import AgeMapperError, ConfigError, InputDataError
from agemapper.images.cache import CacheWriter, Record, VolumeCache, encode
from agemapper.images.contrasts import Contrast
from agemapper.images.grids import get_grid
from agemapper.images.intensity import (
    MIN_REFERENCE,
    cohort_shift,
    percentile_of_sorted,
    subject_outliers,
    summarise,
    volume_statistics,
)
from agemapper.images.nifti import contrast_label, read_volumes
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
    result: the same numbers, without two passes over the full-resolution crop. At the crop's
    own size the copy and the scaling are one multiplication.
    """
    grid = get_grid(contrast.resolution)
    shape = tuple(int(s) for s in shape)
    cropped = volume[grid.crop_slices]
    crop_mean = float(cropped.mean(dtype=np.float64))
    # the box's values are checked here, where they are read anyway: a float64 sum of float32
    # voxels is finite exactly when they all are (voxels outside the box are never used)
    if not math.isfinite(crop_mean):
        bad = int(np.count_nonzero(~np.isfinite(cropped)))
        raise ValueError(f"{bad} voxels in the AgeMapper box are NaN or Inf")
    top = cropped.max()
    if top == 0 and not cropped.any():
        raise ValueError("the AgeMapper box is all zeros")
    norm = 1.0
    if contrast.normalise == "mean":
        if crop_mean <= 0:
            raise ValueError(f"mean of the cropped volume is {crop_mean:g}; cannot normalise")
        norm = 1.0 / crop_mean
    factor = np.float32(norm / contrast.scale_factor)
    if cropped.shape == shape and factor > 0:
        out = np.multiply(cropped, factor)  # a new array, in the crop's memory order
        # float32 multiplication by a positive factor is monotone: the extremes of ``out``
        # are the crop's, multiplied (bit for bit), without two more passes over it
        low, high = cropped.min() * factor, top * factor
    else:
        out = resample(cropped, shape)
        out *= factor
        low, high = out.min(), out.max()
    peak = float(np.abs([low, high]).max())
    if not np.isfinite(peak) or peak > FLOAT16_MAX:
        raise ValueError(
            f"values reach {peak:.3g} after normalisation and scaling, beyond the float16 range "
            f"of the cache ({FLOAT16_MAX:g}): a wrong intensity scale (or scale factor)?"
        )
    # QC statistics on every 8th voxel are plenty: one strided pass, in memory order, copies
    # them out (the statistics do not depend on the order of the voxels)
    sample = cropped[::2, ::2, ::2].copy(order="K")
    inside = np.sort(sample[sample != 0], axis=None)
    # every 8th voxel of ``out``: at the crop's size, the sample scaled (the same float32
    # products, bit for bit), without another strided pass over the volume
    scaled_sample = np.multiply(sample, factor) if out.shape == cropped.shape else None
    stats = {
        "crop_mean": crop_mean,
        "max_normalised": float(top) * norm,
        "p999_normalised": percentile_of_sorted(inside, 99.9) * norm if inside.size else 0.0,
        "max_scaled": float(high),
        **volume_statistics(out, sample, scaled_sample),
    }
    return out, stats


def prepare_volume(
    volume: np.ndarray, contrast: Contrast, shape: Sequence[int], dtype: str = "float16"
) -> tuple[np.ndarray, dict, Record]:
    """:func:`preprocess_volume` and the cache record of its result (:func:`encode`, values
    in ``dtype``), the per-volume work of a job, done in its worker threads."""
    out, stats = preprocess_volume(volume, contrast, shape)
    return out, stats, encode(out, dtype)


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
    training split's manifest given as ``reference`` (a path; or its summary, a dict), for
    validation and test, else the split itself; an outlier subject is bad input like a bad
    file, a whole split off the reference stops the job. With ``checkpoint`` (a path outside
    the outputs) the cache is written there with a journal, so that a job stopped by
    SIGTERM/SIGINT (logged, at the next subject) or killed resumes where it stopped when rerun.
    """
    return preprocess_contrasts(
        subjects, [contrast], data_directory, shape, [cache], [manifest], [info],
        qc_tables=[qc_table], checkpoints=[checkpoint], references=[reference],
        threads=threads, qc=qc, dtype=dtype,
    )[contrast.name]  # fmt: skip


@dataclass
class _Target:
    """One contrast of a job: its outputs, reference, QC log and what is done."""

    contrast: Contrast
    cache: Path
    manifest: Path
    info: Path
    qc_table: Path | None
    checkpoint: Path | None
    reference: object
    stored: tuple
    qclog: QCLog
    dtype: str
    sources: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    writer: CacheWriter | None = None

    @property
    def name(self) -> str:
        return self.contrast.name


def preprocess_contrasts(
    subjects: pd.DataFrame,
    contrasts: Sequence[Contrast],
    data_directory,
    shape: Sequence[int],
    caches: Sequence,
    manifests: Sequence,
    infos: Sequence,
    qc_tables: Sequence | None = None,
    checkpoints: Sequence | None = None,
    references: Sequence | None = None,
    threads: int = 1,
    qc: str = "strict",
    dtype: str = "float16",
) -> dict[str, pd.DataFrame]:
    """:func:`preprocess_split` for several contrasts at once, each subject's file decoded once
    for all the contrasts that read it (e.g. the 4D resting-state file for its components).

    The outputs, ``qc_tables``, ``checkpoints`` and ``references`` are lists in the order of
    ``contrasts`` (``None`` for none). Each contrast gets exactly the cache, manifest, sidecar
    and QC table :func:`preprocess_split` would write for it alone. A problem of one volume
    (NaN, all zeros, a missing 4D volume) concerns its contrast; a problem of the file (missing,
    corrupt, wrong grid or orientation), every contrast reading it. Under the strict policy
    the first problem stops the job and no contrast's outputs are written. Returns the
    manifests by contrast name.
    """
    shape = tuple(int(s) for s in shape)
    contrasts = list(contrasts)
    label = contrast_label([c.name for c in contrasts])
    n = len(subjects)
    if n == 0:
        raise InputDataError(f"no subjects to preprocess for {label}", contrast=label)
    none = [None] * len(contrasts)
    ids = subjects.subject.astype(str).tolist()
    sex, split = subjects.sex.iloc[0], "+".join(pd.unique(subjects.split))
    targets = [
        _Target(
            c, Path(cache), Path(manifest), Path(info), qc_table, checkpoint, reference,
            stored_shape(get_grid(c.resolution).crop_shape, shape),
            QCLog(qc, "preprocess", contrast=c.name, sex=sex, split=split), dtype,
            [c.path_for(data_directory, s) for s in ids],
        )
        for c, cache, manifest, info, qc_table, checkpoint, reference in zip(
            contrasts, caches, manifests, infos, qc_tables or none, checkpoints or none,
            references or none, strict=True,
        )
    ]  # fmt: skip
    _check_sources(contrasts)
    where = f"{label} {sex} {split}"
    _remove_stale_temporaries(
        [p for t in targets for p in (t.cache, t.manifest, t.info, t.qc_table) if p]
    )
    stopped: list[int] = []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over subjects instead; restored for the caller
    handlers = _catch_signals(stopped)
    try:
        with contextlib.ExitStack() as stack:
            for t in targets:
                t.writer = stack.enter_context(_open_writer(t, ids, shape, data_directory))
            todo = {}  # row -> the targets still lacking it
            for i in range(n):
                lacking = [t for t in targets if i not in t.writer.done]
                if lacking:
                    todo[i] = lacking
            done = n - len(todo)
            if any(t.writer.done for t in targets):
                log.info("%s: resumed with %d of %d subjects done", where, done, n)
            progress = Progress(where, n, "subject", log=log, done=done)

            def work(i: int) -> dict:
                return _preprocess_subject(todo[i], i, ids[i], data_directory)

            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
                results = _in_order(pool, work, list(todo), ahead=2 * max(1, threads))
                for k, (i, result) in enumerate(results):
                    for t in todo[i]:
                        got = result[t.name]
                        if isinstance(got, InputDataError):
                            if qc == "strict":
                                raise got  # a file's problem names every contrast reading it
                            t.qclog.handle(_for_contrast(got, t.name))
                            continue
                        record, stats, stamp = got
                        t.stats[i] = stats
                        stats["cache_bytes"] = t.writer.write_record(
                            i, record, {"stats": stats, "source": stamp}
                        )
                    progress.update(done + k + 1)
                    if stopped:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise Interrupted(
                            f"{where}: stopped by signal {stopped[0]} after {done + k + 1}/{n} "
                            "subjects; "
                            + (
                                "the rerun resumes there"
                                if all(t.checkpoint for t in targets)
                                else "rerun to redo it"
                            )
                        )
            tables = {t.name: _finish(t, subjects, n, sex, split) for t in targets}
    finally:
        torch.set_num_threads(torch_threads)
        _restore_signals(handlers)
    for t in targets:
        _write_outputs(t, tables[t.name], shape, n)
    return tables


def _check_sources(contrasts: Sequence[Contrast]) -> None:
    """Contrasts reading one file must agree on its grid (a contrast table's mistake)."""
    grids: dict[str, set] = {}
    for c in contrasts:
        grids.setdefault(c.data_file, set()).add(c.resolution)
    for data_file, found in grids.items():
        if len(found) > 1:
            raise ConfigError(
                f"contrasts reading {data_file} disagree on its resolution ({sorted(found)})"
            )


def _open_writer(t: _Target, ids: list, shape: tuple, data_directory) -> CacheWriter:
    fingerprint = hashlib.sha256(
        json.dumps(
            [t.contrast.as_dict(), list(t.stored), list(shape), ids,
             str(Path(data_directory).resolve()), __version__],
            default=str,
        ).encode()
    ).hexdigest()  # fmt: skip

    def still_valid(row: int, extra: dict) -> bool:  # a resumed row whose file is unchanged
        return extra.get("source") == _source_stamp(t.sources[row])

    writer = CacheWriter(t.cache, len(ids), t.stored, partial=t.checkpoint,
                         fingerprint=fingerprint, keep=still_valid, dtype=t.dtype)  # fmt: skip
    for i, extra in writer.done.items():
        stats = dict(extra["stats"])
        stats["cache_bytes"] = writer.mask_bytes + writer.dtype.itemsize * writer.records[i][1]
        t.stats[i] = stats
    return writer


def _preprocess_subject(targets: list[_Target], i: int, subject: str, data_directory) -> dict:
    """One subject's volumes for ``targets``, each file decoded once: by contrast name, the
    cache record, statistics and file stamp, or the InputDataError that leaves it out."""
    out: dict = {}
    by_file: dict[str, list[_Target]] = {}
    for t in targets:
        by_file.setdefault(t.contrast.data_file, []).append(t)
    for group in by_file.values():
        path = group[0].sources[i]
        stamp = _source_stamp(path)
        grid = get_grid(group[0].contrast.resolution)
        try:
            volumes = read_volumes(  # the values are checked in the box: preprocess_volume
                path, grid, {t.name: t.contrast.volume for t in group}, subject=subject,
                values=False,
            )  # fmt: skip
        except InputDataError as exc:
            out.update({t.name: exc for t in group})
            continue
        for t in group:
            volume = volumes[t.name]
            if isinstance(volume, InputDataError):
                out[t.name] = volume
                continue
            try:
                _, stats, record = prepare_volume(volume, t.contrast, t.stored, t.dtype)
            except ValueError as exc:
                out[t.name] = InputDataError(str(exc), path=path, subject=subject,
                                             contrast=t.name)  # fmt: skip
                continue
            out[t.name] = (record, stats, stamp)
    return out


def _for_contrast(error: InputDataError, name: str) -> InputDataError:
    """A file's problem as one contrast's (its QC row names that contrast)."""
    if error.contrast == name:
        return error
    return InputDataError(error.problem, path=error.path, subject=error.subject, contrast=name)


def _in_order(pool, fn, items: list, ahead: int):
    """``(item, fn(item))`` in order, at most ``ahead`` computed before they are taken."""
    pending: deque = deque()
    items = iter(items)
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= ahead:
            break
    while pending:
        item, future = pending.popleft()
        result = future.result()
        nxt = next(items, None)
        if nxt is not None:
            pending.append((nxt, pool.submit(fn, nxt)))
        yield item, result


def _finish(t: _Target, subjects, n: int, sex: str, split: str) -> pd.DataFrame:
    """The manifest of one contrast, after its intensity checks."""

    def all_failed() -> InputDataError:
        return InputDataError(
            f"every one of the {n} {sex} {split} subjects failed QC "
            f"(first: {t.qclog.rows[0]['problem']})",
            contrast=t.name,
        )

    if not t.stats:
        raise all_failed()
    table = _manifest(subjects, t.stats)
    where = f"{t.name} {sex} {split}"
    table = _check_intensities(table, t.reference, t.qclog, t.contrast, t.sources, where)
    if table.empty:
        raise all_failed()
    return table


def _write_outputs(t: _Target, table: pd.DataFrame, shape: tuple, n: int) -> None:
    grid = get_grid(t.contrast.resolution)
    write_table(t.manifest, table)
    if t.qc_table is not None:
        write_table(t.qc_table, t.qclog.table())
    if len(t.qclog):
        log.warning("%s: %d of %d subjects skipped by QC", t.name, len(t.qclog), n)
    write_json(
        t.info,
        {
            "contrast": t.contrast.as_dict(),
            "source_grid": {"name": grid.name, "shape": grid.shape, "crop": grid.crop},
            "shape": shape,
            "format": CACHE_FORMAT,
            "stored_shape": t.stored,
            "bytes_per_volume": t.writer.stored_bytes / max(len(t.stats), 1),
            "dense_float16_bytes_per_volume": 2 * int(np.prod(t.stored)),
            "dtype": t.dtype,
            "subjects": len(table),
            "skipped": len(t.qclog),
            "intensity": summarise(table),
            "agemapper_version": __version__,
        },
    )


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
