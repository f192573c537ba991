"""Non-imaging phenotypes (nIDPs) as FUNPACK writes them: one column per test, labelled.

A FUNPACK table has a subject id column (``eid``) and one column per variable. How each column
is read follows FUNPACK's own configuration (``agemapper.stats.ukb``: FMRIB's processing and
data-coding tables, the showcase field table), not guesses from the name:

- **Indicators FUNPACK made** (fields its processing table binarises: 6150, 20002, the ICD
  fields, ...; ``6150-3.0`` is "stroke", the instance slot holding the value) are one 0/1 column
  each and are tested as they are (a ``take`` column, date of diagnosis or 0, as present/absent).
  A column named so whose values are not 0/1 was not made that way and is read literally.
- **Categorical single** fields (value type 21) keep FUNPACK's codes; here each level becomes a
  0/1 column ``field-instance.array=level``, *that level against all others* (the subjects who
  answered). A two-level field is one column, its higher level against the lower: one test.
- **Categorical multiple** fields that FUNPACK leaves as arrays (value type 22, e.g. 6138) get
  one 0/1 column per level *across the arrays of an instance*, ``field-instance=level``: 1 when
  any array holds the level, 0 when the subject answered otherwise, missing when no array holds
  an answer.
- Negative codes of categorical fields ("do not know", "prefer not to answer"; FUNPACK's FMRIB
  configuration makes most of them missing already) are missing.
- **Instances**: of fields whose instances are assessment visits (showcase instancing 2), only
  the columns of ``instances`` are kept (``associations.instances``); the others are reported.
- No two columns are the same test: an indicator that duplicates, or complements (x = 1 - y on
  the same subjects), one already kept is dropped and reported.

Columns that are not numeric, constant, or have too few subjects are dropped and reported,
never fatal. Labels (``labels``): the field's title and, for an indicator, the meaning of its
level (``Smoking status: Current``), decoded through FMRIB's recoding and UK Biobank's coding
tables, else FUNPACK's own description of the column (``fmrib_unpack -def``); category from
FMRIB's category table.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agemapper.errors import InputDataError
from agemapper.stats import ukb

log = logging.getLogger(__name__)

COLUMN = ukb.COLUMN
CATEGORICAL_TYPES = (ukb.CATEGORICAL_SINGLE, ukb.CATEGORICAL_MULTIPLE)
VALUE_TYPES = ukb.VALUE_TYPES
ID_COLUMNS = ("eid", "subject")
# a level column made here: field-instance.array=level (single) or field-instance=level (arrays)
LEVEL_COLUMN = re.compile(
    r"^(?P<field>\d+)-(?P<instance>\d+)(?:\.(?P<array>\d+))?=(?P<level>-?\d+(?:\.\d+)?)$"
)


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


def field_table() -> pd.DataFrame:
    """UK Biobank showcase fields (id -> title, value_type, units, ...) as FUNPACK ships them."""
    return ukb.field_table()


def category_table() -> pd.DataFrame:
    """FMRIB category (id, name) for every field of FUNPACK's FMRIB category table."""
    return ukb.category_table()


@dataclass(frozen=True)
class Described:
    """What a tested column is: its field, instance, and the level it indicates (if any)."""

    name: str
    field: int | None
    instance: int | None = None
    array: int | None = None
    level: float | None = None  # the value a 0/1 column indicates
    made_here: bool = False  # a level column of this module (not FUNPACK's)


def describe(name: str) -> Described:
    """Read a column name: a level column made here, else as FUNPACK names it (``ukb.parse``)."""
    m = LEVEL_COLUMN.match(str(name))
    if m:
        array = int(m["array"]) if m["array"] is not None else None
        return Described(
            str(name), int(m["field"]), int(m["instance"]), array, float(m["level"]), True
        )
    c = ukb.parse(name)
    return Described(c.name, c.field, c.instance, c.array, c.value if c.indicator else None)


def parse_column(name: str) -> dict:
    """Field, instance, array and level of a column (field None if not a UK Biobank one)."""
    d = describe(name)
    level = None if d.level is None else f"{d.level:g}"
    return {"field": d.field, "instance": d.instance, "array": d.array, "level": level}


def _description_title(description: str) -> tuple[str, str | None]:
    """FUNPACK's ``-def`` text, ``Title (2.0)`` or ``Title (3.0 - Stroke)``: title, meaning."""
    m = re.match(r"^(?P<title>.*) \((?P<value>[^()]*?)(?: - (?P<meaning>.*))?\)$", description)
    if not m:
        return description, None
    return m["title"], m["meaning"]


def title_of(name: str, descriptions=None) -> str:
    """A column's title: the field's title, with the meaning of the level it indicates."""
    d = describe(name)
    described = (descriptions or {}).get(str(name), "")
    title = ukb.field_table().title.get(d.field, "") if d.field is not None else ""
    if not title or (d.level is None and d.instance is None):
        # not a showcase field, or a column FUNPACK derived (41202-...): its own description
        return described or title
    if d.level is None:
        return title  # FUNPACK's "Title (2.0)" says the instance the column name says
    # FMRIB's recoding traced back first: FUNPACK's own description looks a recoded level up
    # as if it were UK Biobank's code (and has no meaning for 6150's 0, "none of the above")
    meaning = ukb.level_meaning(d.field, d.level)
    if meaning is None and described:
        meaning = _description_title(described)[1]
    title = title.rstrip(".")  # "Alcohol intake frequency." in the showcase
    return f"{title}: {meaning}" if meaning else f"{title} = {d.level:g}"


def labels(columns, descriptions=None) -> pd.DataFrame:
    """Title, value type, units and FMRIB category of each nIDP column (unknown -> empty).

    ``descriptions``: column -> FUNPACK's description (its ``-def`` file), used where the
    tables here cannot decode a level (hierarchical codings, columns FUNPACK derived).
    """
    fields, cats = ukb.field_table(), ukb.category_table()
    rows = []
    for col in columns:
        f = describe(col).field
        vt = fields.value_type.get(f) if f is not None else None
        units = fields.units.get(f, "") if f is not None else ""
        rows.append(
            {
                "nidp": col,
                "field": f if f is not None else "",
                "title": title_of(col, descriptions),
                "value_type": VALUE_TYPES.get(int(vt), "") if vt is not None else "",
                "units": "" if pd.isna(units) else units,
                "category": cats.category.get(f, "uncategorised") if f is not None else "",
            }
        )
    columns = ["nidp", "field", "title", "value_type", "units", "category"]
    return pd.DataFrame(rows, columns=columns)  # no nIDP tested: an empty table, same columns


def read_descriptions(path) -> dict[str, str]:
    """FUNPACK's description file (``-def``): column TAB description, no header."""
    path = Path(path)
    if not path.exists():
        raise InputDataError("nIDP description file is missing", path=path)
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        name, tab, text = line.partition("\t")
        if tab:
            out[name.strip()] = text.strip()
    return out


def value_type(field, categorical_fields=()) -> int | None:
    """The field's showcase value type; ``categorical_fields`` count as categorical single."""
    if field is None:
        return None
    vt = ukb.field_table().value_type.get(int(field))
    vt = None if vt is None or pd.isna(vt) else int(vt)
    if int(field) in {int(x) for x in categorical_fields} and vt not in CATEGORICAL_TYPES:
        return ukb.CATEGORICAL_SINGLE
    return vt


def is_categorical(column: str, categorical_fields=()) -> bool:
    return value_type(describe(column).field, categorical_fields) in CATEGORICAL_TYPES


def _numeric(raw: pd.Series) -> tuple[np.ndarray | None, int]:
    """Float values and the count of stray non-numbers read as missing (None: not numeric)."""
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return raw.to_numpy(dtype=float, na_value=np.nan), 0
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    n_bad = int(values.isna().sum() - raw.isna().sum())
    if n_bad > 0.5 * raw.notna().sum():
        return None, n_bad
    return values.to_numpy(), n_bad


def _is_indicator(values: np.ndarray) -> bool:
    present = values[~np.isnan(values)]
    return bool(np.isin(present, (0.0, 1.0)).all())


def _levels(codes: np.ndarray) -> np.ndarray:
    present = codes[~np.isnan(codes)]
    return np.unique(present)


def prepare(
    table: pd.DataFrame,
    min_subjects: int = 50,
    categorical_fields=(),
    max_levels: int = 50,
    instances=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numeric nIDP matrix (subjects x tests, NaN = missing) and a report of what was left out.

    Columns are read as the module docstring says; ``instances`` (None: all) are the visits
    kept of visit-instanced fields. Never fatal; every problem is a row of the report
    (``nidp``, ``reason``):

    - rows without a subject id are left out, and of duplicated ids the first row is kept
      (reported as ``nidp`` ``(rows)``);
    - a repeated column name (which pandas reads as ``name.1``) is dropped;
    - a column whose values are mostly not numbers is dropped ("not numeric"); a few stray
      non-numbers in a numeric column are read as missing (logged);
    - +inf and -inf (``inf``, ``-Infinity`` in the file) are read as missing, like NaN, before
      anything else (a level, an indicator, a test); the count per column is logged;
    - a column of an instance not in ``instances`` is dropped;
    - a categorical field with more than ``max_levels`` levels is dropped;
    - columns with fewer than ``min_subjects`` subjects, or constant, are dropped; so is an
      indicator that duplicates or complements one kept before it (the same test).
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
    keep_instances = None if instances is None else {int(i) for i in instances}
    names = set(map(str, table.columns))
    out: dict[str, np.ndarray] = {}
    indicators: set[str] = set()
    arrays: dict[tuple[int, int], list[tuple[str, np.ndarray]]] = {}
    stray, literal, infinite = [], [], []
    fields = {c.field for c in map(ukb.parse, names) if c.field is not None}
    instancing = {f: (v or {}).get("instancing") for f, v in ukb.variables(fields).items()}
    for col in table.columns:
        col = str(col)
        base, dot, copy = col.rpartition(".")
        if dot and copy.isdigit() and base in names and COLUMN.match(base):
            report.append({"nidp": col, "reason": f"repeated column name {base}"})
            continue
        values, n_bad = _numeric(table[col])
        if values is None:
            report.append({"nidp": col, "reason": "not numeric"})
            continue
        if n_bad:
            stray.append(f"{col} ({n_bad})")
        n_inf = int(np.isinf(values).sum())
        if n_inf:  # no test can use an infinite value: missing, like NaN (before levels)
            values = np.where(np.isinf(values), np.nan, values)
            infinite.append(f"{col} ({n_inf})")
        c = ukb.parse(col)
        if c.indicator and c.take:
            values = np.where(np.isnan(values), np.nan, (values != 0).astype(float))
        elif c.indicator and not _is_indicator(values):
            literal.append(col)
            c = ukb.plain(col)
        if (
            keep_instances is not None
            and c.instance is not None
            and instancing.get(c.field) == ukb.VISIT_INSTANCING
            and c.instance not in keep_instances
        ):
            report.append(
                {
                    "nidp": col,
                    "reason": f"instance {c.instance} (associations.instances: "
                    f"{sorted(keep_instances)})",
                }
            )
            continue
        vt = value_type(c.field, categorical_fields)
        if c.indicator:
            out[col] = values
            indicators.add(col)
        elif vt == ukb.CATEGORICAL_MULTIPLE and c.instance is not None and c.array is not None:
            arrays.setdefault((c.field, c.instance), []).append((col, values))
        elif vt in CATEGORICAL_TYPES:
            codes = np.where(values >= 0, values, np.nan)  # negative: do not know / refused
            levels = _levels(codes)
            if len(levels) > max_levels:
                report.append({"nidp": col, "reason": f"{len(levels)} categories (> {max_levels})"})
                continue
            if len(levels) == 2:  # one test: the higher level against the lower
                levels = levels[1:]
            present = ~np.isnan(codes)
            for level in levels:
                name = f"{col}={level:g}"
                out[name] = np.where(present, (codes == level).astype(float), np.nan)
                indicators.add(name)
        else:
            out[col] = values
    for (field, instance), cols in arrays.items():
        codes = np.column_stack([v for _, v in cols])
        codes = np.where(codes >= 0, codes, np.nan)
        levels = _levels(codes.ravel())
        if len(levels) > max_levels:
            for col, _ in cols:
                report.append({"nidp": col, "reason": f"{len(levels)} categories (> {max_levels})"})
            continue
        answered = (~np.isnan(codes)).any(axis=1)
        for level in levels:
            name = f"{field}-{instance}={level:g}"
            out[name] = np.where(answered, (codes == level).any(axis=1).astype(float), np.nan)
            indicators.add(name)
    if stray:
        log.warning(
            "nIDP columns with a few values that are not numbers (read as missing): %s",
            ", ".join(stray[:20]) + (" ..." if len(stray) > 20 else ""),
        )
    if infinite:
        log.warning(
            "nIDP columns with infinite values (+inf/-inf, read as missing; subjects per "
            "column): %s",
            ", ".join(infinite),
        )
    if literal:
        log.warning(
            "columns named as FUNPACK names its indicators but holding other values than 0/1 "
            "(read as raw columns: was the table made without -cfg fmrib?): %s",
            ", ".join(literal[:20]) + (" ..." if len(literal) > 20 else ""),
        )
    keep = []
    seen: dict[bytes, str] = {}
    for col, values in out.items():
        mask = ~np.isnan(values)
        present = values[mask]
        if len(present) < min_subjects:
            report.append(
                {"nidp": col, "reason": f"only {len(present)} subjects (< {min_subjects})"}
            )
            continue
        if present.min() == present.max():
            report.append({"nidp": col, "reason": "constant"})
            continue
        if col in indicators:
            same, other = _indicator_keys(mask, values)
            if same in seen and _same_test(out[seen[same]], values, complement=False):
                report.append({"nidp": col, "reason": f"the same test as {seen[same]}"})
                continue
            if other in seen and _same_test(out[seen[other]], values, complement=True):
                report.append({"nidp": col, "reason": f"complement of {seen[other]} (same test)"})
                continue
            seen[same] = col
        keep.append(col)
    matrix = np.empty((len(table), len(keep)), order="F")  # one nIDP per contiguous column
    for j, col in enumerate(keep):
        matrix[:, j] = out[col]
    result = pd.DataFrame(matrix, index=table.index, columns=keep, copy=False)
    return result, pd.DataFrame(report, columns=["nidp", "reason"])


def _indicator_keys(mask: np.ndarray, values: np.ndarray) -> tuple[bytes, bytes]:
    """Digests of an indicator and of its complement (on the same subjects)."""
    bits = np.packbits(mask)
    ones = np.packbits(mask & (values == 1))
    zeros = np.packbits(mask & (values == 0))
    same = hashlib.blake2b(bits.tobytes() + ones.tobytes(), digest_size=16).digest()
    other = hashlib.blake2b(bits.tobytes() + zeros.tobytes(), digest_size=16).digest()
    return same, other


def _same_test(kept: np.ndarray, values: np.ndarray, complement: bool) -> bool:
    mask = ~np.isnan(values)
    if not np.array_equal(mask, ~np.isnan(kept)):
        return False
    target = 1.0 - values[mask] if complement else values[mask]
    return bool(np.array_equal(kept[mask], target))
