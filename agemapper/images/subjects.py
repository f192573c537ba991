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

from agemapper.errors import ConfigError, InputDataError
from agemapper.tables import load_schema, row_problems

# The same values as workflow/schemas/subjects.schema.yaml (tests/test_schemas.py checks it).
SEXES = ("female", "male")
SPLITS = ("train", "validation", "test")
HALVES = ("A", "B")
COLUMNS = ["subject", "sex", "split", "half", "age"]


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
    try:
        ages = np.load(age_path, allow_pickle=False)
    except FileNotFoundError:
        raise InputDataError("file is missing", path=age_path) from None
    except (OSError, ValueError, EOFError) as exc:  # pickled objects are refused, never loaded
        raise InputDataError(f"not a NumPy array of ages ({exc})", path=age_path) from exc
    if not np.issubdtype(ages.dtype, np.number):
        raise InputDataError(f"ages of dtype {ages.dtype}, numbers expected", path=age_path)
    if ages.ndim != 1 or len(ages) != len(ids):
        raise InputDataError(
            f"{ages.shape} ages for {len(ids)} subjects in {ids_path.name}", path=age_path
        )
    return pd.DataFrame({"subject": ids, "sex": sex, "split": split, "age": ages.astype(float)})


def read_released(directory, small: bool = False) -> pd.DataFrame:
    """Read the release's split files into the tidy table (with test halves A/B), unchecked.

    :func:`read_subjects` / :func:`check` validate the rows.
    """
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
    return table[COLUMNS]


def read_excluded(path) -> set[str]:
    return set(_read_ids(Path(path)))


def read_subjects(path, excluded=None, qc: str = "strict") -> pd.DataFrame:
    """Read a tidy subject table (TSV) or a directory of released split files.

    Under ``qc="skip"`` subjects with problems are dropped (see :func:`check`); under
    ``strict`` the first problem raises an error naming the subject and the file.
    """
    table, _ = check(path, excluded, qc)
    return table


def check(path, excluded=None, qc: str = "strict") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The valid subjects and a QC table of the rows left out (under ``qc="skip"``)."""
    from agemapper.qc import QCLog

    path = Path(path)
    if path.is_dir():
        table = read_released(path)
    else:
        if not path.exists():
            raise InputDataError("subject table is missing", path=path)
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
        table = table[COLUMNS]
    qclog = QCLog(qc, "subjects")
    table = validate(table, source=str(path), qclog=qclog)
    if excluded:
        table = table[~table.subject.isin(set(excluded))].reset_index(drop=True)
    return table, qclog.frame()


def validate(table: pd.DataFrame, source: str = "subject table", qclog=None) -> pd.DataFrame:
    """Check every row against ``workflow/schemas/subjects.schema.yaml`` (ids, sexes, splits,
    halves, ages) and that no subject is listed twice.

    Each bad row is passed to ``qclog`` (which raises under the strict policy, the default);
    under ``skip`` bad rows are dropped, and a subject listed twice is dropped altogether.
    """
    from agemapper.qc import QCLog

    qclog = QCLog("strict", "subjects") if qclog is None else qclog
    table = table.copy()
    ids = table["subject"]
    table["subject"] = ids.where(ids.isna(), ids.astype(str).str.strip())
    table["half"] = table["half"].fillna("").astype(str)
    ages = pd.to_numeric(table.age, errors="coerce")
    # a number where the cell holds one, else the cell as it is (the schema says what is wrong)
    table["age"] = ages.astype(object).where(ages.notna(), table.age)
    problems: dict[int, list[str]] = {}
    for i, _, sentence in row_problems(table, load_schema("subjects")):
        problems.setdefault(i, []).append(sentence)
    bad = np.zeros(len(table), dtype=bool)
    for i, sentences in problems.items():
        subject = table.subject.iat[i]
        if pd.isna(subject):
            sentences = [f"row {i + 1} of the table: " + "; ".join(sentences)]
            subject = None
        qclog.handle(InputDataError("; ".join(sentences), subject=subject, path=source))
        bad[i] = True
    dup = table.subject.duplicated(keep=False).to_numpy() & ~bad
    for subject in table.subject[dup].unique():
        where = table[table.subject == subject][["sex", "split"]].to_numpy().tolist()
        qclog.handle(
            InputDataError(f"listed more than once ({where})", subject=subject, path=source)
        )
    bad |= dup
    out = table[~bad].copy()
    out["age"] = out["age"].astype(float)
    return out.reset_index(drop=True)


def select(table: pd.DataFrame, sex: str, split) -> pd.DataFrame:
    """Subjects of one sex and split (or list of splits, in that order), in table order."""
    splits = [split] if isinstance(split, str) else list(split)
    if sex not in SEXES or not splits or any(s not in SPLITS for s in splits):
        raise ConfigError(f"unknown sex/split {sex!r}/{split!r}")
    mine = table[table.sex == sex]
    return pd.concat([mine[mine.split == s] for s in splits], ignore_index=True)
