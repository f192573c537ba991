"""Subjects, their sex, split and age: one tidy table.

The table has columns ``subject`` (UK Biobank id), ``sex`` (male/female), ``split``
(train/validation/test), ``half`` (A or B for test subjects: discovery and replication halves;
empty otherwise) and ``age`` (years at the imaging visit).

The release ships the same information as pairs ``{sex}_{split}.txt`` (one id per line) and
``{sex}_{split}_age.npy`` (ages, same order), with ``testA``/``testB`` partitioning ``test``;
:func:`read_released` reads those, and :func:`read_subjects` accepts either form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, InputDataError

SEXES = ("female", "male")
SPLITS = ("train", "validation", "test")
HALVES = ("A", "B")
COLUMNS = ["subject", "sex", "split", "half", "age"]
AGE_RANGE = (30.0, 100.0)  # plausible ages at a UK Biobank imaging visit


def _read_ids(path: Path) -> list[str]:
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [i for i in ids if not i.isdigit()]
    if bad:
        raise InputDataError(f"non-numeric subject id(s) {bad[:3]}", path=path)
    return ids


def _read_pair(directory: Path, sex: str, split: str, small: bool) -> pd.DataFrame:
    ids_path = directory / f"{sex}_{split}{'_small' if small else ''}.txt"
    age_path = directory / f"{sex}_{split}_age{'_small' if small else ''}.npy"
    ids = _read_ids(ids_path)
    ages = np.load(age_path, allow_pickle=False)
    if ages.ndim != 1 or len(ages) != len(ids):
        raise InputDataError(
            f"{ages.shape} ages for {len(ids)} subjects in {ids_path.name}", path=age_path
        )
    return pd.DataFrame({"subject": ids, "sex": sex, "split": split, "age": ages.astype(float)})


def read_released(directory, small: bool = False) -> pd.DataFrame:
    """Read the release's split files into the tidy table (with test halves A/B)."""
    directory = Path(directory)
    frames = []
    for sex in SEXES:
        for split in SPLITS:
            frames.append(_read_pair(directory, sex, split, small))
    table = pd.concat(frames, ignore_index=True)
    table["half"] = ""
    if not small:
        for sex in SEXES:
            for half in HALVES:
                part = _read_pair(directory, sex, f"test{half}", small=False)
                rows = table.index[(table.sex == sex) & (table.split == "test")]
                lookup = pd.Series(rows, index=table.loc[rows, "subject"].to_numpy())
                missing = sorted(set(part.subject) - set(lookup.index))
                if missing:
                    raise InputDataError(
                        f"{len(missing)} subjects of test half {half} are not in the test split, "
                        f"e.g. {missing[:3]}",
                        path=directory / f"{sex}_test{half}.txt",
                    )
                idx = lookup.loc[part.subject.to_numpy()].to_numpy()
                if not np.allclose(table.loc[idx, "age"].to_numpy(), part.age.to_numpy()):
                    raise InputDataError(
                        f"ages of test half {half} disagree with the test split",
                        path=directory / f"{sex}_test{half}_age.npy",
                    )
                table.loc[idx, "half"] = half
    return validate(table[COLUMNS], source=str(directory))


def read_excluded(path) -> set[str]:
    return set(_read_ids(Path(path)))


def read_subjects(path, excluded=None) -> pd.DataFrame:
    """Read a tidy subject table (TSV) or a directory of released split files."""
    path = Path(path)
    if path.is_dir():
        table = read_released(path)
    else:
        try:
            table = pd.read_csv(path, sep="\t", dtype={"subject": str, "half": str})
        except Exception as exc:
            raise InputDataError(f"cannot be read as a TSV table ({exc})", path=path) from exc
        missing = [c for c in ("subject", "sex", "split", "age") if c not in table.columns]
        if missing:
            raise InputDataError(f"missing column(s) {missing}; need {COLUMNS}", path=path)
        if "half" not in table.columns:
            table["half"] = ""
        table["half"] = table["half"].fillna("")
        table = validate(table[COLUMNS], source=str(path))
    if excluded:
        table = table[~table.subject.isin(set(excluded))].reset_index(drop=True)
    return table


def validate(table: pd.DataFrame, source: str = "subject table") -> pd.DataFrame:
    """Check ids, sexes, splits, halves and ages; raise an error naming the subject."""
    table = table.copy()
    table["subject"] = table["subject"].astype(str).str.strip()
    bad_sex = table[~table.sex.isin(SEXES)]
    if len(bad_sex):
        r = bad_sex.iloc[0]
        raise InputDataError(f"sex {r.sex!r} is not one of {SEXES}", subject=r.subject, path=source)
    bad_split = table[~table.split.isin(SPLITS)]
    if len(bad_split):
        r = bad_split.iloc[0]
        raise InputDataError(
            f"split {r.split!r} is not one of {SPLITS}", subject=r.subject, path=source
        )
    bad_half = table[
        ~table.half.isin(("",) + HALVES) | ((table.half != "") & (table.split != "test"))
    ]
    if len(bad_half):
        r = bad_half.iloc[0]
        raise InputDataError(
            f"half {r.half!r} must be A or B, and only for test subjects",
            subject=r.subject,
            path=source,
        )
    ages = pd.to_numeric(table.age, errors="coerce")
    bad_age = table[ages.isna() | (ages < AGE_RANGE[0]) | (ages > AGE_RANGE[1])]
    if len(bad_age):
        r = bad_age.iloc[0]
        raise InputDataError(
            f"age {r.age!r} is missing, not a number or outside {AGE_RANGE}",
            subject=r.subject,
            path=source,
        )
    table["age"] = ages.astype(float)
    dup = table[table.subject.duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0].subject
        where = dup[dup.subject == first][["sex", "split"]].to_numpy().tolist()
        raise InputDataError(f"listed more than once ({where})", subject=first, path=source)
    return table.reset_index(drop=True)


def select(table: pd.DataFrame, sex: str, split: str) -> pd.DataFrame:
    """Subjects of one sex and split, in table order."""
    if sex not in SEXES or split not in SPLITS:
        raise ConfigError(f"unknown sex/split {sex!r}/{split!r}")
    return table[(table.sex == sex) & (table.split == split)].reset_index(drop=True)
