"""A rehearsal cohort in the exact UK Biobank layout, built without the demo's generator.

What a researcher with UK Biobank access has on disk, in miniature: subject folders holding the
real ``data_file`` paths of ``config/contrasts.tsv`` on FSL's MNI152 grids (float32 ``.nii.gz``,
1 mm 182x218x182 or 2 mm 91x109x91; the resting-state maps as the 4D ``dr_stage2`` file with 25
volumes), split files in the original release's format (``{sex}_{split}.txt`` + ``_age.npy``),
a nIDP table as FUNPACK writes it (``eid`` + ``field-instance.array`` columns, categorical codes,
negative "do not know" codes, missing values, FUNPACK's own 0/1 columns of a binarised field),
the main dataset that FUNPACK reads (a CSV in the showcase layout, every array, instances 0 and
2, raw codes) with a field list, and a confound table.

It shares no code with :mod:`agemapper.synth` on purpose: the study path is tested on data that
the demo's own assumptions did not make. Images carry a little age signal (a shrinking, dimming
ellipsoid with noise) so that training has something to learn; nothing here is ground truth.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHAPES = {"1mm": (182, 218, 182), "2mm": (91, 109, 91)}
# FSL's MNI152 affines (the sform UK Biobank's registered images carry)
AFFINES = {
    "1mm": np.array([[-1, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]], float),
    "2mm": np.array([[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]], float),
}
SPLIT_SIZES = {"train": 6, "validation": 6, "testA": 8, "testB": 8}  # per sex
CONTRASTS = ["T1_nonlinear", "tbss_FA_s", "rsfmri_3"]


def _contrast_table() -> pd.DataFrame:
    return pd.read_csv(REPO / "config/contrasts.tsv", sep="\t", keep_default_na=False)


def _ellipsoid(shape, age: float, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """A brain-like blob: radius and intensity fall with age, plus noise; zero outside.

    Values are rounded to 1/256 so that gzip compresses them about as well as real images.
    """
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    shrink = 1.0 - 0.004 * (age - 45.0)
    r2 = sum(((g - n / 2) / (0.36 * n * shrink)) ** 2 for g, n in zip(grid, shape, strict=True))
    inside = r2 < 1.0
    vol = np.zeros(shape, np.float32)
    values = 1.2 - 0.01 * (age - 45.0) - 0.3 * r2[inside]
    if noise:
        values = values + rng.normal(0.0, noise, values.shape)
    vol[inside] = np.round(values * 256) / 256
    return vol


def _save(vol: np.ndarray, resolution: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(vol, AFFINES[resolution])
    img.set_sform(AFFINES[resolution], code=4)  # MNI152
    img.set_qform(AFFINES[resolution], code=4)
    # gzip level 1: the layout and format of UK Biobank's files, without the test waiting on zlib
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(img.to_bytes())


def _subjects(rng: np.random.Generator) -> pd.DataFrame:
    rows, next_id = [], 1000001
    for sex in ("female", "male"):
        for split, n in SPLIT_SIZES.items():
            for age in rng.uniform(46.0, 80.0, n):
                rows.append({"subject": str(next_id), "sex": sex, "split": split, "age": age})
                next_id += 7
    return pd.DataFrame(rows)


def _write_release_splits(subjects: pd.DataFrame, folder: Path) -> None:
    """The original release's format: ids and ages per sex and split, test = testA + testB."""
    folder.mkdir(parents=True, exist_ok=True)
    for sex in ("female", "male"):
        mine = subjects[subjects.sex == sex]
        parts = {s: mine[mine.split == s] for s in SPLIT_SIZES}
        parts["test"] = pd.concat([parts["testA"], parts["testB"]])
        for split, rows in parts.items():
            (folder / f"{sex}_{split}.txt").write_text("".join(f"{s}\n" for s in rows.subject))
            np.save(folder / f"{sex}_{split}_age.npy", rows.age.to_numpy(np.float64))


def _write_nidps(subjects: pd.DataFrame, path: Path, rng: np.random.Generator) -> None:
    """A table FUNPACK made with FMRIB's configuration (``fmrib_unpack -cfg fmrib``): eid, then
    ``field-instance.array`` columns (instance 2: imaging; one baseline column), categorical
    codes as FMRIB recodes them (1558: 5 daily ... 0 never), 6150 binarised by FUNPACK into one
    0/1 column per value (``6150-4.0``: high blood pressure), "do not know" codes left in."""
    n = len(subjects)
    age = subjects.age.to_numpy()
    table = pd.DataFrame({"eid": subjects.subject.astype(int)})
    table["21001-0.0"] = np.round(26 + 0.05 * (age - 60) + rng.normal(0, 4, n), 1)  # baseline
    table["21001-2.0"] = np.round(27 + 0.05 * (age - 60) + rng.normal(0, 4, n), 1)  # BMI
    table["4080-2.0"] = np.round(135 + 0.5 * (age - 60) + rng.normal(0, 15, n))  # systolic BP
    table["20116-2.0"] = rng.choice([0, 1, 2], n, p=[0.55, 0.3, 0.15])  # smoking
    table["1558-2.0"] = rng.choice([0, 1, 2, 3, 4, 5], n)  # alcohol intake frequency
    table["2443-2.0"] = rng.choice([0, 1, -1], n, p=[0.85, 0.12, 0.03])  # diabetes
    for column in table.columns[1:]:
        table.loc[rng.random(n) < 0.1, column] = np.nan  # not every subject answered
    vascular = rng.choice([0, 1, 4], n, p=[0.5, 0.2, 0.3])  # none, heart attack, hypertension
    for value in (0, 1, 4):
        table[f"6150-{value}.0"] = (vascular == value).astype(int)
    table.to_csv(path, sep="\t", index=False)


def _arrays(answers: list[list[int]], arrays: int) -> np.ndarray:
    out = np.full((len(answers), arrays), np.nan)
    for i, answer in enumerate(answers):
        out[i, : len(answer)] = answer
    return out


def _write_main_dataset(subjects: pd.DataFrame, root: Path, rng: np.random.Generator) -> None:
    """The UK Biobank main dataset as a user downloads it (``ukb_main.csv``, the showcase layout:
    ``eid`` + ``field-instance.array`` for every array of each field, instances 0 and 2, raw
    codes with negative ones, a few missing values) and a field list (``nidp_fields.txt``).

    FMRIB's configuration drops a column with 50 values or fewer, so with this cohort's 56
    subjects every listed column of the imaging visit misses only 3.
    """
    n = len(subjects)
    age = subjects.age.to_numpy()
    cols = {"eid": subjects.subject.astype(int), "31-0.0": (subjects.sex == "male").astype(int)}
    for instance, years in ((0, 9.0), (2, 0.0)):
        cols[f"21001-{instance}.0"] = np.round(27 + 0.05 * (age - 60) + rng.normal(0, 4, n), 1)
        for array in (0, 1):
            bp = 135 + 0.5 * (age - years - 60) + rng.normal(0, 15, n)
            cols[f"4080-{instance}.{array}"] = np.round(bp)
        cols[f"20116-{instance}.0"] = rng.choice([0, 1, 2, -3], n, p=[0.5, 0.3, 0.17, 0.03])
        cols[f"1558-{instance}.0"] = rng.choice([1, 2, 3, 4, 5, 6, -3], n, p=[0.16] * 6 + [0.04])
        cols[f"2443-{instance}.0"] = rng.choice([0, 1, -1, -3], n, p=[0.7, 0.25, 0.03, 0.02])
        vascular = [
            [4] if u < 0.3 else [1, 4] if u < 0.5 else [-3] if u < 0.53 else [-7]
            for u in rng.random(n)
        ]  # high blood pressure, also a heart attack, refused, none of the above
        quals = [
            [1, 2] if u < 0.3 else [3] if u < 0.6 else [5, 3, 6] if u < 0.97 else [-7]
            for u in rng.random(n)
        ]
        vasc, qual = _arrays(vascular, 4), _arrays(quals, 6)
        cols.update({f"6150-{instance}.{a}": vasc[:, a] for a in range(4)})
        cols.update({f"6138-{instance}.{a}": qual[:, a] for a in range(6)})
    main = pd.DataFrame(cols)
    for column in ("21001-2.0", "4080-2.0", "20116-2.0", "1558-2.0", "2443-2.0", "6150-2.0"):
        main.loc[rng.choice(n, 3, replace=False), column] = np.nan
    main = main.astype({c: "Int64" for c in main.columns if not c.startswith("21001")})
    main.to_csv(root / "ukb_main.csv", index=False)
    (root / "nidp_fields.txt").write_text(
        "# nIDPs to extract\n21001\n4080\n20116\n1558\n2443\n6150\n6138\n"
    )


def _write_confounds(subjects: pd.DataFrame, path: Path, rng: np.random.Generator) -> None:
    n = len(subjects)
    pd.DataFrame(
        {
            "eid": subjects.subject.astype(int),
            "site": rng.choice([11025, 11026, 11027], n),
            "head_size": rng.normal(1.0, 0.1, n).round(4),
            "motion": rng.gamma(2.0, 0.05, n).round(4),
        }
    ).to_csv(path, sep="\t", index=False)


def build(root, contrasts=CONTRASTS, seed: int = 7) -> dict[str, Path]:
    """Write the rehearsal cohort under ``root``; return the paths a site config points at."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    subjects = _subjects(rng)
    table = _contrast_table().set_index("contrast")
    chosen = table.loc[list(contrasts)]
    files = chosen.groupby("data_file", sort=False)
    data = root / "subjectsAll"
    for row in subjects.itertuples():
        for data_file, rows in files:
            resolution = rows.resolution.iloc[0]
            shape = SHAPES[resolution]
            if rows.volume.iloc[0] != "":  # the 4D resting-state maps: all 25 components
                base = _ellipsoid(shape, row.age, rng, noise=0.0)
                vol = np.stack([base * (1 + k / 25) for k in range(25)], axis=-1)
            else:
                vol = _ellipsoid(shape, row.age, rng)
            _save(vol, resolution, data / row.subject / data_file)
    splits = root / "splits"
    _write_release_splits(subjects, splits)
    _write_nidps(subjects, root / "nidps.tsv", rng)
    _write_main_dataset(subjects, root, rng)
    _write_confounds(subjects, root / "confounds.tsv", rng)
    return {
        "subjects": splits,
        "data_directory": data,
        "nidps": root / "nidps.tsv",
        "confounds": root / "confounds.tsv",
        "ukb_main": root / "ukb_main.csv",  # the same cohort's main dataset, raw
        "nidp_fields": root / "nidp_fields.txt",
    }
