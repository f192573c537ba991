"""The table schemas (workflow/schemas/) on the tables this repository ships, through Snakemake's
``validate`` (as common.smk runs it) and through the package (as it reads the tables)."""

import pandas as pd
import pytest
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from agemapper.errors import ConfigError, InputDataError
from agemapper.images import contrasts, grids, subjects
from agemapper.tables import load_schema, schema_path
from conftest import REPO

SUBJECT_TABLES = ["datasets/ukb_subjects.tsv", "datasets/ukb_subjects_small.tsv"]


def _subject_table(path):
    return pd.read_csv(REPO / path, sep="\t", dtype={"subject": str, "half": str})


@pytest.mark.parametrize("path", SUBJECT_TABLES)
def test_shipped_subject_tables_pass_their_schema(path):
    table = _subject_table(path)
    validate(table, schema=str(schema_path("subjects")), set_default=False)
    assert len(subjects.read_subjects(REPO / path)) == len(table)


def test_shipped_contrast_table_passes_its_schema():
    table = contrasts.read_table(REPO / "config/contrasts.tsv")
    validate(table, schema=str(schema_path("contrasts")), set_default=False)
    assert len(contrasts.read_contrasts(REPO / "config/contrasts.tsv")) == len(table) == 57


def test_schemas_and_the_code_name_the_same_values():
    s, c = load_schema("subjects")["properties"], load_schema("contrasts")["properties"]
    assert tuple(s["sex"]["enum"]) == subjects.SEXES
    assert tuple(s["split"]["enum"]) == subjects.SPLITS
    assert tuple(s["half"]["enum"]) == ("", *subjects.HALVES)
    assert list(c) == contrasts.COLUMNS
    assert c["resolution"]["enum"] == list(grids.GRIDS)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(sex="other"), r"sex 'other' is not one of \['female', 'male'\]"),
        (dict(age=230.0), r"age 230.0 is outside \[30, 100\]"),
        (dict(half="A"), "half 'A' must be ''.*only test subjects"),
        (dict(subject="../etc"), "subject '../etc' does not match"),
    ],
)
def test_a_bad_subject_row_fails_both_validations(change, message):
    table = _subject_table(SUBJECT_TABLES[1]).head(5).copy()
    for k, v in change.items():
        table[k] = table[k].astype(object)
        table.loc[3, k] = v
    with pytest.raises(WorkflowError, match="row 3"):
        validate(table, schema=str(schema_path("subjects")), set_default=False)
    with pytest.raises(InputDataError, match=message):
        subjects.validate(table.fillna({"half": ""}))


def test_a_bad_contrast_row_fails_both_validations(tmp_path):
    table = contrasts.read_table(REPO / "config/contrasts.tsv")
    table.loc[4, "normalise"] = "zscore"
    with pytest.raises(WorkflowError, match="row 4"):
        validate(table, schema=str(schema_path("contrasts")), set_default=False)
    table.to_csv(tmp_path / "c.tsv", sep="\t", index=False)
    with pytest.raises(ConfigError, match=r"row 6: normalise 'zscore' is not one of"):
        contrasts.read_contrasts(tmp_path / "c.tsv")
