"""nIDP input hygiene: bad tables are clear errors naming the file; bad columns are reported."""

import numpy as np
import pandas as pd
import pytest

from agemapper.errors import InputDataError
from agemapper.stats.nidps import labels, prepare, read_subject_table


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


def test_infinite_values_are_missing_with_a_count_per_nidp(tmp_path, caplog):
    n = 60
    rng = np.random.default_rng(1)
    bmi = rng.normal(27, 4, n).round(2).astype(object)
    bmi[[3, 7, 11]] = ["inf", "-inf", "Infinity"]  # as a file can hold them
    smoking = np.array([0, 1, 2] * 20).astype(object)
    smoking[[0, 1]] = "inf"  # +inf is not a level (>= 0) of a categorical field
    frame = pd.DataFrame(
        {
            "eid": _subjects(n),
            "21001-2.0": bmi,
            "20116-2.0": smoking,
            "4080-2.0": 140.0 + np.arange(n),
        }
    )
    path = tmp_path / "nidps.tsv"
    frame.to_csv(path, sep="\t", index=False)
    table = read_subject_table(path, "nIDP table")
    assert np.isinf(table["21001-2.0"]).sum() == 3  # pandas reads them as infinities
    with caplog.at_level("WARNING", logger="agemapper.stats.nidps"):
        matrix, report = prepare(table, min_subjects=10)
    assert np.isfinite(matrix.to_numpy()[~matrix.isna().to_numpy()]).all()
    assert matrix["21001-2.0"].isna().sum() == 3
    assert list(matrix.columns) == [
        "21001-2.0", "20116-2.0=0", "20116-2.0=1", "20116-2.0=2", "4080-2.0"
    ]  # fmt: skip
    assert matrix["20116-2.0=0"].isna().sum() == 2
    warned = [r.getMessage() for r in caplog.records if "infinite" in r.getMessage()]
    assert len(warned) == 1 and "21001-2.0 (3)" in warned[0] and "20116-2.0 (2)" in warned[0]
    assert "4080-2.0" not in warned[0]
    assert report.empty


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


# ------------------------------------------------- reading a table as FUNPACK's configuration says


def _subjects(n):
    return [str(1000 + i) for i in range(n)]


def test_funpack_indicators_stay_single_columns_and_levels_are_one_test_each():
    n = 120
    i = np.arange(n)
    table = pd.DataFrame(
        {
            # FUNPACK binarised 6150 across visits: one 0/1 column per value (0: none of them)
            "6150-0.0": (i % 4 == 0).astype(float),
            "6150-4.0": (i % 4 == 1).astype(float),
            "6150-1.0": (i % 4 != 0).astype(float),  # the complement of 6150-0.0
            "6150-3.0": (i % 4 == 1).astype(float),  # the same as 6150-4.0
            # ICD10 diagnoses with `take`: the date of diagnosis, or 0
            "41270-3.0": np.where(i % 5 == 0, 2015.4, 0.0),
            # categorical single: two levels are one test, three are three
            "2443-2.0": np.where(i % 7 == 0, -1, i % 3 == 0).astype(float),
            "20116-2.0": np.where(i % 11 == 0, -3, i % 3).astype(float),
            # categorical multiple left as arrays (6138): one column per level across arrays
            "6138-2.0": np.where(i % 2 == 0, 1.0, 5.0),
            "6138-2.1": np.where(i % 3 == 0, 3.0, np.nan),
        },
        index=_subjects(n),
    )
    matrix, report = prepare(table, min_subjects=10, instances=[2])
    assert list(matrix.columns) == [
        "6150-0.0", "6150-4.0", "41270-3.0", "2443-2.0=1", "20116-2.0=0", "20116-2.0=1",
        "20116-2.0=2", "6138-2=1", "6138-2=3",
    ]  # fmt: skip
    reasons = report.set_index("nidp").reason
    assert reasons["6150-1.0"] == "complement of 6150-0.0 (same test)"
    assert reasons["6150-3.0"] == "the same test as 6150-4.0"
    assert reasons["6138-2=5"] == "complement of 6138-2=1 (same test)"  # everyone has 1 or 5
    assert set(matrix["41270-3.0"].unique()) == {0.0, 1.0}  # diagnosed or not
    assert matrix["2443-2.0=1"].isna().sum() == len(i[i % 7 == 0])  # do not know: missing
    assert matrix["6138-2=3"].sum() == (i % 3 == 0).sum()  # level 3 only in the second array
    assert matrix["6138-2=1"].sum() == (i % 2 == 0).sum()


def test_only_the_configured_visits_of_visit_instanced_fields_are_kept():
    n = 60
    rng = np.random.default_rng(1)
    table = pd.DataFrame(
        {
            "4080-0.0": rng.normal(130, 15, n),  # baseline visit
            "4080-2.0": rng.normal(135, 15, n),  # imaging visit
            "4080-3.0": rng.normal(138, 15, n),  # repeat imaging
            "34-0.0": rng.integers(1940, 1970, n).astype(float),  # year of birth: not a visit
            "6150-1.0": (rng.random(n) < 0.3).astype(float),  # FUNPACK's, across its visits
            "my_score": rng.normal(0, 1, n),  # not a UK Biobank field
        },
        index=_subjects(n),
    )
    matrix, report = prepare(table, min_subjects=10, instances=[2])
    assert list(matrix.columns) == ["4080-2.0", "34-0.0", "6150-1.0", "my_score"]
    reasons = report.set_index("nidp").reason
    assert reasons["4080-0.0"] == "instance 0 (associations.instances: [2])"
    assert reasons["4080-3.0"] == "instance 3 (associations.instances: [2])"
    both, _ = prepare(table, min_subjects=10, instances=[0, 2])
    assert "4080-0.0" in both and "4080-3.0" not in both
    assert len(prepare(table, min_subjects=10)[0].columns) == 6  # no selection: all


def test_columns_named_as_funpack_indicators_but_not_0_1_are_read_as_raw_arrays():
    n = 80
    i = np.arange(n)
    # 6150 as a raw array (a table made without -cfg fmrib): codes, not FUNPACK's indicators
    table = pd.DataFrame(
        {"6150-2.0": np.where(i % 3 == 0, -7.0, 1 + i % 4), "6150-2.1": np.nan},
        index=_subjects(n),
    )
    matrix, _ = prepare(table, min_subjects=10, instances=[2])
    assert list(matrix.columns) == ["6150-2=1", "6150-2=2", "6150-2=3", "6150-2=4"]
    lab = labels(matrix.columns).set_index("nidp").title
    assert lab["6150-2=3"] == "Vascular/heart problems diagnosed by doctor: Stroke"


def test_titles_decode_levels_through_fmrib_recoding_and_funpack_descriptions():
    descriptions = {
        "20002-1065.0": "Non-cancer illness code, self-reported (1065.0 - hypertension)",
        "41202-1.primary": "Diagnoses - main ICD10 (A01 - typhoid, primary)",
    }
    cols = ["1558-2.0=5", "1558-2.0=0", "6138-2=1", "6150-0.0", "20002-1065.0",
            "20002-1066.0", "41202-1.primary", "20116-2.0=7", "4080-2.1", "my_score"]  # fmt: skip
    title = labels(cols, descriptions).set_index("nidp").title
    assert title["1558-2.0=5"] == "Alcohol intake frequency: Daily or almost daily"  # recoded 1
    assert title["1558-2.0=0"] == "Alcohol intake frequency: Never"  # recoded 6
    assert title["6138-2=1"] == (
        "Qualifications: O levels/GCSEs or equivalent / CSEs or equivalent"
    )  # two codes merged by the recoding
    assert title["6150-0.0"] == "Vascular/heart problems diagnosed by doctor: None of the above"
    assert title["20002-1065.0"] == "Non-cancer illness code, self-reported: hypertension"
    assert title["20002-1066.0"] == "Non-cancer illness code, self-reported = 1066"  # no table
    assert title["41202-1.primary"] == descriptions["41202-1.primary"]
    assert title["20116-2.0=7"] == "Smoking status = 7"  # a code the coding does not have
    assert title["4080-2.1"] == "Systolic blood pressure, automated reading"
    assert title["my_score"] == ""
