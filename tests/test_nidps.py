"""nIDP input hygiene: bad tables are clear errors naming the file; bad columns are reported."""

import numpy as np
import pandas as pd
import pytest

from agemapper.errors import InputDataError
from agemapper.stats.nidps import prepare, read_subject_table


def test_a_file_that_is_not_a_table_is_an_error_naming_it(tmp_path):
    cases = {
        "missing.tsv": None,
        "empty.tsv": b"",
        "binary.tsv": bytes(range(256)) * 4,
        "no_id.tsv": b"id\t21001-2.0\n1\t25.0\n",
        "commas.tsv": b"eid,21001-2.0\n1,25.0\n",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(InputDataError) as err:
            read_subject_table(path, "nIDP table")
        assert str(path) in str(err.value) and "nIDP table" in str(err.value), name
    with pytest.raises(InputDataError, match="comma"):
        read_subject_table(tmp_path / "commas.tsv", "nIDP table")
    with pytest.raises(InputDataError, match="'eid' or 'subject'"):
        read_subject_table(tmp_path / "no_id.tsv", "nIDP table")
    with pytest.raises(InputDataError, match="cannot be read"):
        read_subject_table(tmp_path, "nIDP table")  # a directory


def test_ids_are_text_and_funpack_csv_reads(tmp_path):
    path = tmp_path / "nidps.csv"
    path.write_text("eid,21001-2.0\n1000001.0,25.5\n,30.0\n1000002,27.0\n")
    table = read_subject_table(path)
    assert list(table.index) == ["1000001", "", "1000002"]


def test_bad_columns_and_rows_are_reported_never_fatal(tmp_path):
    path = tmp_path / "nidps.tsv"
    n = 80
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "eid": [str(1000 + i) for i in range(n)],
            "21001-2.0": rng.normal(27, 4, n),  # kept
            "4080-2.0": rng.normal(140, 15, n),  # kept, plus a repeated copy below
            "53-2.0": ["2015-06-01"] * n,  # a date: not numeric
            "50-2.0": [170.0] * n,  # constant
            "48-2.0": [90.0] * 10 + [np.nan] * (n - 10),  # too few subjects
            "23099-2.0": list(rng.normal(30, 7, n - 2)) + ["n/a", "?"],  # 2 stray strings
        }
    )
    text = frame.to_csv(sep="\t", index=False)
    header, *lines = text.splitlines()
    header += "\t4080-2.0"  # a repeated column name (pandas reads it as 4080-2.0.1)
    lines = [line + "\t1.0" for line in lines]
    lines += [lines[3], "\t" + lines[4].split("\t", 1)[1]]  # a duplicated id; a missing id
    path.write_text("\n".join([header, *lines]) + "\n")
    table = read_subject_table(path, "nIDP table")
    matrix, report = prepare(table, min_subjects=20)
    assert list(matrix.columns) == ["21001-2.0", "4080-2.0", "23099-2.0"]
    assert len(matrix) == n and matrix.index.is_unique
    assert matrix["23099-2.0"].isna().sum() == 2
    reasons = dict(zip(report.nidp, report.reason, strict=False))
    assert reasons["53-2.0"] == "not numeric"
    assert reasons["50-2.0"] == "constant"
    assert reasons["48-2.0"] == "only 10 subjects (< 20)"
    assert reasons["4080-2.0.1"] == "repeated column name 4080-2.0"
    rows = report[report.nidp == "(rows)"].reason.tolist()
    assert rows == [
        "1 row(s) without a subject id",
        "1 duplicated subject id(s), first row kept: 1003",
    ]
    assert matrix.to_numpy().flags.f_contiguous  # one nIDP per contiguous column


def test_categorical_levels_too_many_and_numeric_codes():
    table = pd.DataFrame(
        {"20116-2.0": np.arange(120.0) % 60, "1558-2.0": [1, 2, 3, 6] * 30},
        index=[str(i) for i in range(120)],
    )
    matrix, report = prepare(table, min_subjects=10)
    assert report.set_index("nidp").reason["20116-2.0"] == "60 categories (> 50)"
    assert list(matrix.columns) == ["1558-2.0=1", "1558-2.0=2", "1558-2.0=3", "1558-2.0=6"]
    # the levels of one field share one missingness pattern (computed once in the statistics)
    assert (matrix.isna().nunique(axis=1) == 1).all()
