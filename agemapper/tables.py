"""Tables checked against their JSON schemas (``workflow/schemas/*.schema.yaml``).

A table schema describes one row, as Snakemake's ``validate`` reads a DataFrame: each row is a
record whose empty cells are left out. The workflow validates with Snakemake; the package, which
also runs outside it (the ``agemapper`` command, the tests), validates against the same files
(:func:`row_problems`) and turns each failure into a sentence naming the row's column and value.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import fastjsonschema
import pandas as pd
import yaml
from jsonschema import Draft202012Validator

from agemapper.errors import ConfigError

# The repository this package sits in (the package is used from a checkout: pip install -e .).
REPOSITORY = Path(__file__).resolve().parent.parent
SCHEMAS = REPOSITORY / "workflow" / "schemas"


def repository_file(relative: str) -> Path:
    """A file of the workflow repository, found from the package (so from any directory)."""
    path = REPOSITORY / relative
    if not path.exists():
        raise ConfigError(
            f"{relative} not found next to the agemapper package ({REPOSITORY}); install the "
            "package from a checkout of the workflow repository (pip install -e .)"
        )
    return path


def schema_path(name: str) -> Path:
    return repository_file(f"workflow/schemas/{name}.schema.yaml")


@functools.cache
def load_schema(name: str) -> dict:
    """The schema ``workflow/schemas/{name}.schema.yaml`` (``config``, ``contrasts``, ...)."""
    return yaml.safe_load(schema_path(name).read_text())


def records(table: pd.DataFrame) -> list[dict]:
    """The rows as Snakemake's ``validate`` sees them: empty cells left out."""
    return [
        {k: v for k, v in rec.items() if not (v is None or v is pd.NA or v != v)}
        for rec in table.astype(object).to_dict("records")
    ]


def unknown_columns(table: pd.DataFrame, schema: dict) -> list[str]:
    if schema.get("additionalProperties", True) is not False:
        return []
    return [c for c in table.columns if c not in schema.get("properties", {})]


def _sentence(error) -> tuple[str, str]:
    """(column, what is wrong) for one jsonschema error of a row."""
    keyword, sch, value = error.validator, error.schema, error.instance
    column = str(error.path[0]) if error.path else ""
    if keyword == "required":
        column = str(error.message).split("'")[1]
        return column, f"{column} is missing"
    if keyword == "type":
        kind = error.validator_value
        article = "an" if str(kind)[0] in "aeiou" else "a"
        reason = f"is not {article} {kind}"
    elif keyword == "enum":
        reason = f"is not one of {list(error.validator_value)}"
    elif keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        lo = sch.get("minimum", sch.get("exclusiveMinimum"))
        hi = sch.get("maximum", sch.get("exclusiveMaximum"))
        if lo is not None and hi is not None:
            reason = f"is outside [{lo}, {hi}]"
        elif lo is not None:
            reason = f"must be {'>=' if 'minimum' in sch else '>'} {lo}"
        else:
            reason = f"must be {'<=' if 'maximum' in sch else '<'} {hi}"
    elif keyword == "pattern":
        reason = f"does not match {error.validator_value}"
    elif keyword == "const":
        reason = f"must be {error.validator_value!r}"
    else:
        reason = error.message
    if sch.get("description") and keyword in ("pattern", "const"):
        reason = f"{reason} ({sch['description'].rstrip('.')})"
    return column, f"{column} {value!r} {reason}"


def row_problems(table: pd.DataFrame, schema: dict) -> Iterator[tuple[int, str, str]]:
    """(row position, column, sentence) for every way a row breaks the schema.

    Every row is screened by ``fastjsonschema`` (the schema compiled to Python: ~0.2 s for the
    29,000 rows of the study's subject table, where ``jsonschema`` takes 1.3-2.5 s); the rows
    it rejects are explained by ``jsonschema``, which lists every error of a row.
    """
    screen = fastjsonschema.compile(schema)
    explain = Draft202012Validator(schema)
    for i, record in enumerate(records(table)):
        try:
            screen(record)
            continue
        except fastjsonschema.JsonSchemaValueException as exc:
            first = exc.message
        errors = sorted(explain.iter_errors(record), key=lambda e: list(e.path))
        if not errors:  # pragma: no cover - the two validators disagree
            yield i, "", first
        for error in errors:
            column, sentence = _sentence(error)
            yield i, column, sentence
