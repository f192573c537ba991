"""Preprocessing throughput: ours, the decode-once limit and the original's per-epoch path.

    python benchmarks/preprocess_throughput.py            # 6 subjects, all 57 contrasts
    python benchmarks/preprocess_throughput.py --small    # smoke run: 2 subjects, 4 files
    python benchmarks/preprocess_throughput.py --subjects 4 --copies 10 --repeats 3

Builds real-size float32 ``.nii.gz`` files (zlib level 6, as FSL writes them) for a few subjects
at the exact paths of ``config/contrasts.tsv``: the 25 1 mm and 7 2 mm 3D files and the 4D
resting-state file (91x109x91x25), with brain-like content (agemapper.synth's anatomy and
recipes, each contrast's own; the brain mask dilated by two voxels, unskeletonised maps keep
their white-matter mask) so that compression ratios are realistic (T1 about 8 MB, the 4D file
about 29 MB). Then, files in the page cache, one thread, it measures CPU seconds per subject
(the median of ``--repeats`` runs) for each group of contrasts (1 mm, 2 mm 3D, the 4D
components) and the study:

(a) ours: ``preprocess_contrasts`` as the workflow runs it, one job per source file (the 25
    components of the 4D file in one job), with every check, statistic, journal and sidecar;
(b) ours, one job per contrast: the same code, the workflow's jobs before this change (the 4D
    file decoded once per component);
(c) the decode-once limit: each file read and decompressed once (ISA-L) and, per contrast, only
    the arithmetic its cache needs (crop, normalise, scale, float16 cast, mask and pack with
    ``agemapper.images.cache.encode``, the record written to a file): no checks, no statistics;
(d) the original's per-epoch path: per sample, ``np.array(nib.load(path).dataobj)`` (zlib),
    volume k of the 4D file, crop, normalise, scale (the released ``__getitem__`` without its
    augmentation), paid for every training and validation subject in every epoch of each of the
    3 replicate networks.

Study CPU-hours: (a) and (b) per subject x 31,672 (the release's 29,326 subjects; validation
subjects are preprocessed twice, for the "validation" and the "predict" caches), (c) x 29,326,
(d) x 59,826 per epoch ((17,596 training + 2,346 validation subjects) x 3 networks). Caches of
(a) and (b) are compared byte for byte.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this repository's agemapper

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from isal import igzip  # noqa: E402
from scipy import ndimage  # noqa: E402

from agemapper.images.cache import encode  # noqa: E402
from agemapper.images.contrasts import by_source, read_contrasts  # noqa: E402
from agemapper.images.grids import FULL_TRAINING_SHAPE, GRIDS  # noqa: E402
from agemapper.images.preprocess import preprocess_contrasts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STUDY_SUBJECTS = 29_326  # the release's splits: train 17,596, validation 2,346, test 9,384
STUDY_JOBS = STUDY_SUBJECTS + 2_346  # validation subjects are in two caches
STUDY_EPOCH_SAMPLES = (17_596 + 2_346) * 3  # the original: every epoch of 3 networks
SMALL_FILES = ("T1_nonlinear", "tbss_FA_s", "vbm", "rsfmri_0")  # one file of each kind


def group_of(contrast) -> str:
    if contrast.is_4d:
        return "4D components"
    return "1 mm" if contrast.resolution == "1mm" else "2 mm 3D"


# ------------------------------------------------------------------------- the cohort


def make_cohort(root: Path, n: int, contrasts: list) -> pd.DataFrame:
    """``n`` subjects' files for ``contrasts`` (their files in full: all 25 4D volumes)."""
    from agemapper.synth.anatomy import anatomy
    from agemapper.synth.cohort import render

    ids = [str(4000001 + i) for i in range(n)]
    files = {}
    for c in contrasts:
        files.setdefault(c.data_file, c)
    for k, sid in enumerate(ids):
        rng = np.random.default_rng([2023, k])
        subj = {
            "site": 11025,
            "head_size": float(rng.normal(1.0, 0.05)),
            "motion_z": float(rng.normal(0, 1)),
            "anatomy": rng.standard_normal(6).astype(np.float32),
            "component_sensitivity": np.concatenate([[1.0], rng.uniform(0, 1, 24)]),
            "noise": 1.0,
        }
        t = float(rng.normal(0, 1))
        for c in files.values():
            a = anatomy(c.resolution)
            values = render(c, a, np.full(25, t) if c.is_4d else t, subj, rng)
            if c.name == "T2_lesions":  # a few thousand voxels, at any age
                pv = a.maps["periventricular"] * rng.uniform(0.9, 1.1, values.shape)
                values = (pv > np.quantile(pv, 0.997)).astype(np.float32)
            vol = a.volume(values, np.float32)
            _fill_margin(vol, a, c, rng)
            _save(vol, c.resolution, root / sid / c.data_file)
        print(f"  subject {k + 1}/{n} written", flush=True)
    return pd.DataFrame(
        {"subject": ids, "sex": "female", "split": "train", "half": "",
         "age": np.linspace(50, 75, n)}
    )  # fmt: skip


def _fill_margin(vol: np.ndarray, a, contrast, rng) -> None:
    """Registered, brain-extracted images are not cut at the template's mask: give dense maps a
    two-voxel margin of low values (skeletons, lesion masks and tract maps stay sparse)."""
    name = contrast.name
    if name.endswith("_s") or name in ("T2_lesions", "tracts") or name.startswith("tbss_"):
        return
    ring = ndimage.binary_dilation(a.mask, iterations=2) & ~a.mask
    inside = vol[a.mask] if vol.ndim == 3 else vol[a.mask][:, 0]
    scale = float(np.median(np.abs(inside[inside != 0])))
    if vol.ndim == 4:
        vol[ring] = rng.normal(0, 0.3 * scale, (int(ring.sum()), vol.shape[3]))
    else:
        vol[ring] = np.abs(rng.normal(0.3 * scale, 0.1 * scale, int(ring.sum())))


def _save(vol: np.ndarray, resolution: str, path: Path) -> None:
    grid = GRIDS[resolution]
    img = nib.Nifti1Image(vol.astype(np.float32), grid.affine_array)
    img.set_sform(grid.affine_array, code=4)
    img.set_qform(grid.affine_array, code=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


# ------------------------------------------------------------------------- the paths


def cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def ours(subjects, jobs: dict, data: Path, out: Path) -> dict[str, float]:
    """CPU seconds of each job, as the workflow runs it (QC tables, checkpoint and journal);
    ``jobs`` maps a job's name to its contrasts."""
    seconds = {}
    for name, members in jobs.items():
        files = {
            e: [out / name / f"{c.name}.{e}" for c in members] for e in ("cache", "tsv", "json")
        }
        seconds[name] = cpu(
            lambda m=members, f=files: preprocess_contrasts(
                subjects, m, data, FULL_TRAINING_SHAPE, f["cache"], f["tsv"], f["json"],
                qc_tables=[out / "qc" / f"{c.name}.tsv" for c in m],
                checkpoints=[out / "checkpoints" / f"{c.name}.cache" for c in m], qc="skip",
            )
        )  # fmt: skip
    return seconds


def limit(subjects, sources: dict, data: Path, out: Path) -> dict[str, float]:
    """Each file read and decompressed once; per contrast the cache's arithmetic, written."""
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for name, members in sources.items():
        sinks = {c.name: open(out / f"{c.name}.bin", "wb") for c in members}  # noqa: SIM115

        def run(members=members, sinks=sinks):
            grid = GRIDS[members[0].resolution]
            for sid in subjects.subject:
                data_bytes = igzip.decompress((data / sid / members[0].data_file).read_bytes())
                header = nib.Nifti1Header.from_fileobj(io.BytesIO(data_bytes[:352]))
                shape, offset = header.get_data_shape(), int(header["vox_offset"])
                voxels = np.frombuffer(data_bytes, np.float32, int(np.prod(shape)), offset)
                voxels = voxels.reshape(shape, order="F")
                for c in members:
                    crop = (voxels[..., c.volume] if c.is_4d else voxels)[grid.crop_slices]
                    norm = 1.0 / crop.mean(dtype=np.float64) if c.normalise == "mean" else 1.0
                    record = encode(np.multiply(crop, np.float32(norm / c.scale_factor)))
                    sinks[c.name].write(record.mask.data)
                    sinks[c.name].write(record.values.data)

        seconds[name] = cpu(run)
        for sink in sinks.values():
            sink.close()
    return seconds


def original(subjects, sources: dict, data: Path) -> dict[str, float]:
    """The released data path, one sample of each contrast per subject."""
    seconds = {}
    for name, members in sources.items():
        grid = GRIDS[members[0].resolution]

        def run(members=members, grid=grid):
            for sid in subjects.subject:
                for c in members:
                    path = str(data / sid / c.data_file)
                    if c.is_4d:
                        x = np.array(nib.load(path).dataobj)[:, :, :, c.volume]
                    else:
                        x = np.array(nib.load(path).dataobj)
                    x = x[grid.crop_slices]
                    if c.normalise == "mean":
                        x = x / x.mean()
                    x = x / c.scale_factor
                    torch.from_numpy(x)

        seconds[name] = cpu(run)
    return seconds


# ------------------------------------------------------------------------- report


def linked(data: Path, subjects: pd.DataFrame, copies: int) -> pd.DataFrame:
    """``copies`` subject folders (symbolic links) for each generated subject: a job then has
    as many subjects as ``copies`` x the generated ones, so that its costs per job (opening
    caches, manifests, sidecars, intensity checks) weigh per subject about as little as in
    the study's jobs of 1,000 to 9,000 subjects, while the page cache holds only the
    generated files."""
    folder = data.parent / "linked"
    folder.mkdir(exist_ok=True)
    rows = []
    for j in range(copies):
        for k, row in enumerate(subjects.itertuples(index=False)):
            sid = str(6000001 + j * len(subjects) + k)
            if not (folder / sid).exists():
                (folder / sid).symlink_to(data / row.subject, target_is_directory=True)
            rows.append({**row._asdict(), "subject": sid})
    return pd.DataFrame(rows)


def per_group(seconds: dict, jobs: dict, n: int) -> dict[str, float]:
    """Seconds per subject by group of contrasts (and all), from per-job seconds."""
    out: dict[str, float] = {}
    for name, members in jobs.items():
        group = group_of(members[0])
        out[group] = out.get(group, 0.0) + seconds[name] / n
    out["all"] = sum(out.values())
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true",
                    help="smoke run: 2 subjects in jobs of 4, 4 files, one run (whatever the "
                         "sizes given)")  # fmt: skip
    ap.add_argument("--subjects", type=int, help="generated subjects (6; --small 2)")
    ap.add_argument("--repeats", type=int, help="timed runs of each path (3; --small 1)")
    ap.add_argument("--copies", type=int, help="folders per subject in a job (10; --small 2)")
    ap.add_argument("--no-original", action="store_true", help="skip the (slow) original path")
    ap.add_argument("--workdir", type=Path, help="keep the generated files here (default: temp)")
    args = ap.parse_args(argv)
    n = 2 if args.small else args.subjects or 6
    repeats = 1 if args.small else args.repeats or 3
    copies = 2 if args.small else args.copies or 10
    torch.set_num_threads(1)
    table = read_contrasts(REPO / "config/contrasts.tsv")
    contrasts = list(table.values())
    if args.small:
        keep = {table[c].data_file for c in SMALL_FILES}
        contrasts = [c for c in contrasts if c.data_file in keep]
    sources = by_source(contrasts)
    singles = {c.name: [c] for c in contrasts}

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        data = root / "subjects"
        print(f"writing {n} subjects' files ({len(sources)} per subject) under {data}", flush=True)
        subjects = make_cohort(data, n, contrasts)
        sizes = {
            c.name: (data / subjects.subject[0] / c.data_file).stat().st_size / 1e6
            for c in contrasts
        }
        for sid in subjects.subject:  # into the page cache
            for members in sources.values():
                (data / sid / members[0].data_file).read_bytes()
        jobs = linked(data, subjects, copies)
        folders, m = data.parent / "linked", len(jobs)

        load = os.getloadavg()
        print(f"load average before: {' '.join(f'{x:.2f}' for x in load)}", flush=True)
        runs: dict[str, list] = {"ours": [], "per contrast": [], "limit": [], "original": []}
        for r in range(repeats):
            print(f"repeat {r + 1}/{repeats}", flush=True)
            runs["ours"].append(per_group(ours(jobs, sources, folders, root / "ours"),
                                          sources, m))  # fmt: skip
            runs["per contrast"].append(
                per_group(ours(jobs, singles, folders, root / "single"), singles, m)
            )
            runs["limit"].append(per_group(limit(jobs, sources, folders, root / "limit"),
                                           sources, m))  # fmt: skip
            if not args.no_original:
                runs["original"].append(per_group(original(subjects, sources, data),
                                                  sources, n))  # fmt: skip
        load_after = os.getloadavg()
        same = all(
            (root / "ours" / g / f"{c.name}.cache").read_bytes()
            == (root / "single" / c.name / f"{c.name}.cache").read_bytes()
            for g, members in sources.items()
            for c in members
        )

    groups = [g for g in ("1 mm", "2 mm 3D", "4D components") if any(
        group_of(c) == g for c in contrasts)] + ["all"]  # fmt: skip
    counts = {g: sum(group_of(c) == g for c in contrasts) for g in groups[:-1]}
    counts["all"] = len(contrasts)
    median = {
        path: {g: statistics.median(run[g] for run in found) for g in groups}
        for path, found in runs.items()
        if found
    }
    study = {"ours": STUDY_JOBS, "per contrast": STUDY_JOBS, "limit": STUDY_SUBJECTS,
             "original": STUDY_EPOCH_SAMPLES}  # fmt: skip
    names = {
        "ours": "(a) ours: one job per source file",
        "per contrast": "(b) ours, one job per contrast",
        "limit": "(c) limit: decode once + arithmetic",
        "original": "(d) original, per epoch",
    }
    print()
    print(f"{platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__}, one thread; {n} subjects ({copies} folders each in a "
          f"job: {m}), median of {repeats}")  # fmt: skip
    print(f"load average before {load[0]:.2f}, after {load_after[0]:.2f}")
    per_subject = sum({c.data_file: sizes[c.name] for c in contrasts}.values())
    print(
        f"file sizes (MB): T1 {sizes.get('T1_nonlinear', float('nan')):.1f}, "
        f"4D {sizes.get('rsfmri_0', float('nan')):.1f}, "
        f"tbss_FA_s {sizes.get('tbss_FA_s', float('nan')):.2f}, "
        f"vbm {sizes.get('vbm', float('nan')):.2f}; all files of a subject {per_subject:.0f}"
    )
    print()
    print("CPU seconds per subject")
    header = f"{'path':38s}" + "".join(f"{f'{g} ({counts[g]})':>20s}" for g in groups)
    print(header + f"{'study CPU-h':>14s}")
    for path, values in median.items():
        row = f"{names[path]:38s}" + "".join(f"{values[g]:20.3f}" for g in groups)
        print(row + f"{values['all'] * study[path] / 3600:14.1f}")
    ratios = {}
    if "limit" in median:
        print()
        for path in ("ours", "per contrast"):
            ratios[path] = {g: median[path][g] / median["limit"][g] for g in groups}
            print(f"{names[path]:38s}" + "".join(f"{ratios[path][g]:19.2f}x" for g in groups)
                  + "   x the limit")  # fmt: skip
    print()
    print(f"caches of (a) and (b) byte-identical: {same}")
    return {"median": median, "ratios": ratios, "identical": same, "load": [load, load_after]}


if __name__ == "__main__":
    main()
