"""Non-imaging phenotypes (nIDPs) as FUNPACK writes them, and their UK Biobank labels.

A FUNPACK table has a subject id column (``eid``) and one column per variable named
``field-instance.array`` (``20116-2.0``). Numeric columns are kept; categorical fields (UK
Biobank value types 21 "categorical single" and 22 "categorical multiple") are binarised into
one indicator column per level, named ``field-instance.array=level`` so that a level can never
be mistaken for an array index; negative codes ("do not know", "prefer not to answer") become
missing. Columns that are not numeric, constant, or have too few subjects are dropped and
reported, never fatal.

Labels come from the tables FUNPACK ships: ``funpack/schema/field.txt`` (field id -> title,
value type, units) and FMRIB's ``funpack/configs/fmrib/categories.tsv`` (category -> fields).
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from agemapper.errors import InputDataError

log = logging.getLogger(__name__)

COLUMN = re.compile(r"^(?P<field>\d+)-(?P<instance>\d+)\.(?P<array>\d+)$")
CATEGORICAL_TYPES = (21, 22)
VALUE_TYPES = {
    11: "integer",
    21: "categorical (single)",
    22: "categorical (multiple)",
    31: "continuous",
    41: "text",
    51: "date",
    61: "time",
    101: "compound",
}
ID_COLUMNS = ("eid", "subject")


def read_subject_table(path, what: str = "table") -> pd.DataFrame:
    """Read a TSV/CSV with a subject id column (``eid`` or ``subject``), indexed by id (str).

    Anything that is not such a table (a missing or empty file, a directory, binary data, no id
    column) raises ``InputDataError`` naming the file. Ids are kept as text (``1234567.0`` reads
    as ``1234567``); rows without an id get the id ``""``.
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{what} is missing", path=path)
    sep = "," if path.suffix == ".csv" else "\t"
    try:
        table = pd.read_csv(path, sep=sep, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise InputDataError(f"{what} is empty", path=path) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise InputDataError(f"{what} cannot be read as a table ({exc})", path=path) from exc
    id_col = next((c for c in ID_COLUMNS if c in table.columns), None)
    if id_col is None:
        hint = ""
        if table.shape[1] == 1 and any(c in str(table.columns[0]) for c in ",;\t "):
            hint = f" (one column only: is it {'comma' if sep == ',' else 'tab'}-separated?)"
        raise InputDataError(
            f"{what} has no subject id column ('eid' or 'subject'); columns start "
            f"{list(table.columns[:5])}{hint}",
            path=path,
        )
    raw = table[id_col]
    ids = raw.astype(str).str.strip().str.replace(r"\.0$", "", regex=True)
    ids = ids.where(raw.notna(), "")
    table = table.drop(columns=[id_col])
    table.index = pd.Index(ids, name="subject")
    return table


@functools.lru_cache(maxsize=1)
def field_table() -> pd.DataFrame:
    """UK Biobank showcase fields (id -> title, value_type, units) from FUNPACK, if installed."""
    try:
        import funpack
    except ImportError:
        return pd.DataFrame(columns=["title", "value_type", "units"]).rename_axis("field")
    path = Path(funpack.__file__).parent / "schema" / "field.txt"
    table = pd.read_csv(path, sep="\t", usecols=["field_id", "title", "value_type", "units"])
    return table.set_index("field_id").rename_axis("field")


def _expand(spec: str) -> list[int]:
    """Expand FMRIB category ranges: ``a``, ``a:b`` (inclusive) and ``a:step:b``."""
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        nums = [int(x) for x in part.split(":")]
        if len(nums) == 1:
            out.append(nums[0])
        elif len(nums) == 2:
            out.extend(range(nums[0], nums[1] + 1))
        else:
            out.extend(range(nums[0], nums[2] + 1, nums[1]))
    return out


@functools.lru_cache(maxsize=1)
def category_table() -> pd.DataFrame:
    """FMRIB category (id, name) for every field listed in FUNPACK's categories.tsv."""
    try:
        import funpack
    except ImportError:
        return pd.DataFrame(columns=["category_id", "category"]).rename_axis("field")
    path = Path(funpack.__file__).parent / "configs" / "fmrib" / "categories.tsv"
    if not path.exists():
        return pd.DataFrame(columns=["category_id", "category"]).rename_axis("field")
    raw = pd.read_csv(path, sep="\t")
    rows = {}
    for _, rec in raw.iterrows():
        for field in _expand(rec["Variables"]):
            rows.setdefault(field, (int(rec["ID"]), rec["Category"]))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["category_id", "category"])
    return table.rename_axis("field").sort_index()


def parse_column(name: str) -> dict:
    """Split ``field-instance.array[=level]`` into its parts (field None if not UKB-shaped)."""
    base, _, level = str(name).partition("=")
    m = COLUMN.match(base)
    if not m:
        return {"field": None, "instance": None, "array": None, "level": level or None}
    return {
        "field": int(m["field"]),
        "instance": int(m["instance"]),
        "array": int(m["array"]),
        "level": level or None,
    }


def labels(columns) -> pd.DataFrame:
    """Title, value type, units and FMRIB category for each nIDP column (unknown -> empty)."""
    fields, cats = field_table(), category_table()
    rows = []
    for col in columns:
        p = parse_column(col)
        f = p["field"]
        title = fields.title.get(f, "") if f is not None else ""
        if p["level"] is not None and title:
            title = f"{title} = {p['level']}"
        vt = fields.value_type.get(f) if f is not None else None
        rows.append(
            {
                "nidp": col,
                "field": f if f is not None else "",
                "title": title,
                "value_type": VALUE_TYPES.get(int(vt), "") if vt is not None else "",
                "units": fields.units.get(f, "") if f is not None else "",
                "category": cats.category.get(f, "uncategorised") if f is not None else "",
            }
        )
    columns = ["nidp", "field", "title", "value_type", "units", "category"]
    out = pd.DataFrame(rows, columns=columns)  # no nIDP tested: an empty table, same columns
    out["units"] = out["units"].fillna("")
    return out


def is_categorical(column: str, categorical_fields=()) -> bool:
    f = parse_column(column)["field"]
    if f is None:
        return False
    if f in set(int(x) for x in categorical_fields):
        return True
    vt = field_table().value_type.get(f)
    return vt is not None and int(vt) in CATEGORICAL_TYPES


def prepare(
    table: pd.DataFrame,
    min_subjects: int = 50,
    categorical_fields=(),
    max_levels: int = 50,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numeric nIDP matrix (subjects x columns, NaN = missing) and a report of what was left out.

    Never fatal; every problem is a row of the report (``nidp``, ``reason``):

    - rows without a subject id are left out, and of duplicated ids the first row is kept
      (reported as ``nidp`` ``(rows)``);
    - a repeated column name (which pandas reads as ``name.1``) is dropped;
    - a column whose values are mostly not numbers is dropped ("not numeric"); a few stray
      non-numbers in a numeric column are read as missing (logged);
    - categorical fields (value types 21/22, or ``categorical_fields``) become one 0/1 column
      per level, ``field-instance.array=level``; negative codes are missing; more than
      ``max_levels`` levels drops the field;
    - columns with fewer than ``min_subjects`` subjects, or constant, are dropped.
    """
    report = []
    no_id = table.index.isin(["", "nan", "None", "NA"])
    if no_id.any():
        report.append({"nidp": "(rows)", "reason": f"{no_id.sum()} row(s) without a subject id"})
        table = table[~no_id]
    if table.index.duplicated().any():
        dups = table.index[table.index.duplicated()].unique()
        report.append(
            {
                "nidp": "(rows)",
                "reason": f"{len(dups)} duplicated subject id(s), first row kept: "
                f"{', '.join(map(str, dups[:5]))}",
            }
        )
        table = table[~table.index.duplicated(keep="first")]
    names = set(map(str, table.columns))
    out: dict[str, np.ndarray] = {}
    stray = []
    for col in table.columns:
        col = str(col)
        base, dot, copy = col.rpartition(".")
        if dot and copy.isdigit() and base in names and COLUMN.match(base):
            report.append({"nidp": col, "reason": f"repeated column name {base}"})
            continue
        raw = table[col]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            values = raw.astype(float)
        else:
            values = pd.to_numeric(raw, errors="coerce").astype(float)
            n_bad = int(values.isna().sum() - raw.isna().sum())
            if n_bad > 0.5 * raw.notna().sum():
                report.append({"nidp": col, "reason": "not numeric"})
                continue
            if n_bad:
                stray.append(f"{col} ({n_bad})")
        if is_categorical(col, categorical_fields):
            codes = values.where(values >= 0)  # negative: do not know / prefer not to answer
            levels = np.sort(codes.dropna().unique())
            if len(levels) > max_levels:
                report.append({"nidp": col, "reason": f"{len(levels)} categories (> {max_levels})"})
                continue
            present = codes.notna().to_numpy()
            for level in levels:
                out[f"{col}={level:g}"] = np.where(
                    present, (codes == level).to_numpy(float), np.nan
                )
            continue
        out[col] = values.to_numpy()
    if stray:
        log.warning(
            "nIDP columns with a few values that are not numbers (read as missing): %s",
            ", ".join(stray[:20]) + (" ..." if len(stray) > 20 else ""),
        )
    keep = []
    for col, values in out.items():
        present = values[~np.isnan(values)]
        if len(present) < min_subjects:
            report.append(
                {"nidp": col, "reason": f"only {len(present)} subjects (< {min_subjects})"}
            )
        elif present.min() == present.max():
            report.append({"nidp": col, "reason": "constant"})
        else:
            keep.append(col)
    matrix = np.empty((len(table), len(keep)), order="F")  # one nIDP per contiguous column
    for j, col in enumerate(keep):
        matrix[:, j] = out[col]
    result = pd.DataFrame(matrix, index=table.index, columns=keep, copy=False)
    return result, pd.DataFrame(report, columns=["nidp", "reason"])
