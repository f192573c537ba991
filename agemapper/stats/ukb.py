"""What a column of a FUNPACK table is, read from FUNPACK's own configuration.

FUNPACK (``fmrib_unpack``, PyPI ``fmrib-unpack``) with FMRIB's configuration (``-cfg fmrib``)
turns the UK Biobank main dataset into the nIDP table. How it names and codes the columns is
set by that configuration, which this module loads with FUNPACK's own loaders (its argument
parser resolves ``-cfg fmrib`` to its table files, ``funpack.loadtables`` reads them):

- the **processing table** (``fmrib/processing.tsv``) says which fields FUNPACK binarises
  (``binariseCategorical``: 6150, 6155, 20001-20004, 20199, the ICD fields, ...) and how it
  names their columns: across visits ``{field}-{value}`` (``6150-3.0``: the value 3 "stroke",
  at any configured visit), within a visit ``{field}-{visit}.{value}``. Each such column is one
  0/1 indicator (with ``take``, the date of the diagnosis or 0);
- the **data-coding tables** (``fmrib/datacodings_*.tsv``) say which codes become missing and
  how levels are recoded (``1558`` alcohol intake frequency: 1 "daily" becomes 5, 6 "never"
  becomes 0), so that a level in the table is decoded through the recoding back to UK Biobank's
  code before its meaning is looked up;
- the **showcase field table** (``funpack/schema/field.txt``) gives each field's title, value
  type, data coding, units and instancing (2: the instances are assessment visits);
- FMRIB's **category table** (``fmrib/categories.tsv``) gives each field's category.

Meanings of codes come from the coding tables shipped with this package
(``agemapper/stats/codings/``, UK Biobank showcase codings of the categorical fields the demo and
the tests use) and from those FUNPACK ships (``funpack/schema/coding/``). FUNPACK's schema
files are read as installed, never downloaded, so the labels depend on the installed versions
only. FUNPACK is imported lazily: it is a dependency of the workflow, not of the package.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

CONFIG = "fmrib"  # FUNPACK's configuration: `fmrib_unpack -cfg fmrib`
CODINGS = Path(__file__).parent / "codings"
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
CATEGORICAL_SINGLE, CATEGORICAL_MULTIPLE = 21, 22
VISIT_INSTANCING = 2  # showcase instancing 2: instances are assessment-centre visits
# binariseCategorical's column names, by (acrossVisits, acrossInstances): the table in its
# docstring (FUNPACK calls an instance a "visit" and an array index an "instance")
BINARISED_NAMES = {
    (False, False): "{vid}-{visit}.{instance}_{value}",
    (False, True): "{vid}-{visit}.{value}",
    (True, False): "{vid}-{value}.{instance}",
    (True, True): "{vid}-{value}",
}
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_FIELDS = {"vid": r"(?P<vid>\d+)", "visit": r"(?P<visit>\d+)", "instance": r"(?P<array>\d+)"}
_FIELDS["value"] = rf"(?P<value>{_NUMBER})"
COLUMN = re.compile(r"^(?P<field>\d+)-(?P<instance>\d+)\.(?P<array>\d+)$")


@contextlib.contextmanager
def _quiet():
    """FUNPACK logs a warning each time it reads a schema file instead of downloading it, and
    its table loaders use pandas features pandas now warns about: neither is ours to fix."""
    logger = logging.getLogger("funpack")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@functools.cache
def configuration(name: str = CONFIG) -> types.SimpleNamespace:
    """FUNPACK's arguments for ``-cfg name``, as its own parser resolves them (table paths)."""
    import funpack.config
    import funpack.custom
    import funpack.schema

    with _quiet():
        funpack.custom.registerBuiltIns()  # the processes and cleaners the tables name
        args, _ = funpack.config.parseArgsWithConfigFile(
            ["-cfg", name, "-nd", "-nj", "1", "/nonexistent/out.tsv", "/nonexistent/in.csv"]
        )
        for plugin in args.plugin_file or []:
            funpack.custom.loadPluginFile(plugin)  # e.g. FMRIB's date normalisation
    funpack.schema.DOWNLOAD = False
    return args


@functools.lru_cache(maxsize=1)
def field_table() -> pd.DataFrame:
    """UK Biobank showcase fields: title, value_type, units, coding, instancing (by field id)."""
    import funpack.schema

    with _quiet():
        raw = funpack.schema.loadFieldProperties(download=False)
    table = raw.rename(
        columns={"field_id": "field", "encoding_id": "coding", "instance_id": "instancing"}
    )
    columns = ["title", "value_type", "units", "coding", "instancing", "array_max"]
    return table.set_index("field")[columns]


@functools.lru_cache(maxsize=1)
def category_table() -> pd.DataFrame:
    """FMRIB category (id, name) of every field FUNPACK's category table lists (the first)."""
    import funpack.loadtables

    args = configuration()
    with _quiet():
        raw = funpack.loadtables.loadCategoryTable(args.category_file)
    rows: dict[int, tuple[int, str]] = {}
    for cat_id, rec in raw.iterrows():
        for field in rec["Variables"]:
            rows.setdefault(int(field), (int(cat_id), str(rec["Category"])))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["category_id", "category"])
    return table.rename_axis("field").sort_index()


@dataclass(frozen=True)
class Binarisation:
    """How FUNPACK's processing table binarises a field: its column names, across visits?"""

    field: int
    pattern: re.Pattern
    across_visits: bool
    take: bool  # columns hold another field's values (a diagnosis date) or 0, not 0/1


def _name_pattern(fmt: str, field: int) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", fmt)
    out = []
    for part in parts:
        key = part[1:-1] if part.startswith("{") and part.endswith("}") else None
        if key == "vid":
            out.append(str(field))
        elif key in _FIELDS:
            out.append(_FIELDS[key])
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$")


@functools.lru_cache(maxsize=1)
def binarisations() -> dict[int, Binarisation]:
    """Every field FUNPACK's processing table binarises, with its column-name pattern."""
    import inspect

    import funpack.loadtables
    import funpack.processing_functions

    args = configuration()
    defaults = {
        k: p.default
        for k, p in inspect.signature(
            funpack.processing_functions.binariseCategorical
        ).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    with _quiet():
        cats = funpack.loadtables.loadCategoryTable(args.category_file)
        table = funpack.loadtables.loadProcessingTable(args.processing_file, cattable=cats)
    out: dict[int, Binarisation] = {}
    for _, row in table.iterrows():
        how, fields = row["Variable"][0], row["Variable"][1]
        for proc in row["Process"].values():
            if proc.name != "binariseCategorical" or how != "vids":
                continue
            kw = {**defaults, **proc.kwargs}
            visits, arrays = bool(kw["acrossVisits"]), bool(kw["acrossInstances"])
            fmt = kw.get("nameFormat") or BINARISED_NAMES[visits, arrays]
            for field in fields:
                field = int(field)
                out[field] = Binarisation(
                    field, _name_pattern(fmt, field), visits, kw.get("take") is not None
                )
    return out


_VARIABLES: dict[int, dict] = {}


def variables(fields) -> dict[int, dict]:
    """FUNPACK's variable table rows (its FMRIB configuration merged in) for ``fields``.

    Each row: ``type`` (FUNPACK's CTYPES name), ``coding``, ``instancing``, ``na_values``,
    ``raw_levels`` and ``new_levels`` (numbers; a level FUNPACK computes from the data, such as
    ``max()+1``, is left out). Loaded once per field per process.
    """
    import funpack.datatable
    import funpack.loadtables

    known = field_table().index
    missing = sorted({int(f) for f in fields} - set(_VARIABLES))
    wanted = [f for f in missing if f in known]
    if wanted:
        args = configuration()
        cols = [
            funpack.datatable.Column("-", f"{f}-0.0", i + 1, f, 0, 0) for i, f in enumerate(wanted)
        ]
        info = types.SimpleNamespace(datafiles=["-"], columns=lambda _: cols)
        with _quiet():
            table, _, _ = funpack.loadtables.loadVariableTable(
                info, args.variable_file, args.datacoding_file, args.type_file
            )
        for field, rec in table.iterrows():
            raw, new = _numbers(rec["RawLevels"]), _numbers(rec["NewLevels"])
            pairs = [(r, n) for r, n in zip(raw, new, strict=False) if None not in (r, n)]
            _VARIABLES[int(field)] = {
                "type": str(rec["Type"]).rsplit(".", 1)[-1],
                "coding": _int_or_none(rec["DataCoding"]),
                "instancing": _int_or_none(rec["Instancing"]),
                "na_values": [v for v in _numbers(rec["NAValues"]) if v is not None],
                "raw_levels": [r for r, _ in pairs],
                "new_levels": [n for _, n in pairs],
            }
    for f in missing:
        _VARIABLES.setdefault(f, {})
    return {int(f): _VARIABLES[int(f)] for f in fields}


def _numbers(values) -> list:
    if values is None or (not hasattr(values, "__iter__") and pd.isna(values)):
        return []
    out = []
    for v in list(values):
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(None)
    return out


def _int_or_none(value):
    return None if value is None or pd.isna(value) else int(value)


@functools.cache
def coding_meanings(coding: int) -> dict[float, str]:
    """Code -> meaning of a UK Biobank data coding: this package's table, else FUNPACK's."""
    ours = CODINGS / f"coding{int(coding)}.tsv"
    if ours.exists():
        table = pd.read_csv(ours, sep="\t", index_col=0)
    else:
        import funpack.schema.coding

        try:
            with _quiet():
                table = funpack.schema.coding.loadCodingFile(coding=int(coding), download=False)
        except (OSError, ValueError):
            return {}
    out = {}
    for code, meaning in table["meaning"].items():
        try:
            out[float(code)] = str(meaning)
        except (TypeError, ValueError):
            continue  # hierarchical or text codes (ICD10 "A01"): not a level of a number
    return out


def level_meaning(field: int, level: float) -> str | None:
    """What ``level`` of ``field`` means in a FUNPACK table (made with ``-cfg fmrib``).

    A level FMRIB's configuration recoded is traced back to UK Biobank's code(s) first
    (``1558``: level 5 is code 1, "Daily or almost daily"); levels merged by the recoding are
    joined with " / ". None when the coding has no table here.
    """
    var = variables([field]).get(int(field)) or {}
    coding = var.get("coding") or _int_or_none(field_table().coding.get(int(field)))
    if not coding:
        return None
    meanings = coding_meanings(coding)
    level = float(level)
    if level in var.get("new_levels", []):
        raw = [r for r, n in zip(var["raw_levels"], var["new_levels"], strict=True) if n == level]
    elif level in var.get("raw_levels", []):
        return None  # a code FUNPACK recodes away can only be in a table made otherwise
    else:
        raw = [level]
    found = [meanings[r] for r in raw if r in meanings]
    return " / ".join(found) if len(found) == len(raw) else None


@dataclass(frozen=True)
class Column:
    """A column of a FUNPACK table: its field and, where the name says, instance and array.

    ``indicator``: a column FUNPACK's processing table made by binarising a field (one 0/1
    column per value, ``value``); ``instance`` is None when it spans the configured visits.
    """

    name: str
    field: int | None
    instance: int | None = None
    array: int | None = None
    value: float | None = None
    indicator: bool = False
    take: bool = False


def parse(name: str) -> Column:
    """Read a FUNPACK column name with FUNPACK's configuration (see the module docstring)."""
    name = str(name)
    lead = re.match(r"^(\d+)-", name)
    if lead:
        field = int(lead[1])
        how = binarisations().get(field)
        m = how.pattern.match(name) if how else None
        if m:
            groups = m.groupdict()
            return Column(
                name,
                field,
                instance=int(groups["visit"]) if groups.get("visit") else None,
                array=int(groups["array"]) if groups.get("array") else None,
                value=float(groups["value"]),
                indicator=True,
                take=how.take,
            )
    m = COLUMN.match(name)
    if m:
        return Column(name, int(m["field"]), int(m["instance"]), int(m["array"]))
    if lead and int(lead[1]) in field_table().index:
        return Column(name, int(lead[1]))  # a column FUNPACK derived (e.g. 41202-...primary)
    return Column(name, None)


def plain(name: str) -> Column:
    """``field-instance.array`` read literally (a raw column, whatever the configuration says)."""
    m = COLUMN.match(str(name))
    return (
        Column(str(name), int(m["field"]), int(m["instance"]), int(m["array"]))
        if m
        else parse(name)
    )
