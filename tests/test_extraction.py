"""The nIDP table from a raw UK Biobank main dataset, by the real `fmrib_unpack -cfg fmrib`.

The main dataset here is written as UK Biobank ships it (showcase layout, every array of each
field, instances 0 and 2, negative codes, missing arrays), with values chosen so that what
FUNPACK and the reading of its table must make of them is known exactly.
"""

from __future__ import annotations

import csv
import itertools
import re

import numpy as np
import pandas as pd
import pytest

from agemapper.errors import InputDataError
from agemapper.stats import extraction, nidps

N = 360  # FUNPACK keeps the arrays of over 50 values
EIDS = np.arange(1_000_001, 1_000_001 + N)
# multiple-choice answers, one pattern per subject in turn (arrays in answer order)
QUALIFICATIONS = [
    [1, 3], [2], [-7], [-3], [], [5, 6, 4], [1, 2], [3, 5, 6], [2, 4], [1, 6], [2, 3, 5], [4, 1, 6],
]  # fmt: skip
VASCULAR = [[4], [1, 4], [-7], [-3], [], [2], [3, 4], [2, 3]]
# 6138 (coding 100305) and 6150 (coding 100605); -7 "none of the above", -3 "prefer not to answer"
FIELDS = [20116, 2443, 1558, 6138, 6150, 4080, 25781, 30740]


def _arrays(patterns, arrays: int) -> np.ndarray:
    out = np.full((N, arrays), np.nan)
    for i in range(N):
        answer = patterns[i % len(patterns)]
        out[i, : len(answer)] = answer
    return out


def write_main_dataset(path, quoted: bool = True) -> pd.DataFrame:
    """A main dataset in the showcase layout; returns it (eid + field-instance.array)."""
    rng = np.random.default_rng(0)
    i = np.arange(N)
    cols = {"eid": EIDS, "31-0.0": i % 2}  # sex: not in the field list
    cols["20116-0.0"] = np.where(i % 10 == 0, -3, 0)  # baseline: never smoked
    # imaging visit: codes with "prefer not to answer" (-3), "do not know" (-1) and no answer
    cols["20116-2.0"] = rng.choice([0, 1, 2, -3, np.nan], N, p=[0.5, 0.3, 0.1, 0.05, 0.05])
    cols["2443-0.0"] = rng.choice([0, 1], N)
    cols["2443-2.0"] = rng.choice([0, 1, -1, -3, np.nan], N, p=[0.7, 0.2, 0.04, 0.03, 0.03])
    cols["1558-2.0"] = rng.choice([1, 2, 3, 4, 5, 6, -3], N)  # 1 daily ... 6 never
    for instance in (0, 2):
        quals = _arrays(QUALIFICATIONS if instance == 2 else [[1]], 6)
        vasc = _arrays(VASCULAR if instance == 2 else [[1]], 4)  # baseline: all heart attacks
        cols.update({f"6138-{instance}.{a}": quals[:, a] for a in range(6)})
        cols.update({f"6150-{instance}.{a}": vasc[:, a] for a in range(4)})
        for a in range(2):
            bp = np.round(rng.normal(135 + 5 * instance, 15, N))
            bp[rng.random(N) < 0.05] = np.nan
            cols[f"4080-{instance}.{a}"] = bp
    cols["25781-2.0"] = np.round(rng.lognormal(8, 0.8, N), 1)
    cols["30740-0.0"] = np.round(rng.normal(5, 1, N), 3)  # glucose: baseline only
    table = pd.DataFrame(cols)
    out = table.copy()
    for c in out.columns:
        if out[c].dropna().eq(out[c].dropna().round()).all():
            out[c] = out[c].astype("Int64")  # integers as UK Biobank writes them
    out.to_csv(path, index=False, quoting=csv.QUOTE_ALL if quoted else csv.QUOTE_MINIMAL)
    return table


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("main")
    main = write_main_dataset(root / "ukb_main.csv")
    (root / "fields.txt").write_text("# the nIDPs\n" + "\n".join(map(str, FIELDS)) + "\n")
    subjects = pd.DataFrame({"subject": EIDS.astype(str)})
    subjects.to_csv(root / "subjects.tsv", sep="\t", index=False)
    out = {"nidps": root / "nidps.tsv", "descriptions": root / "descriptions.tsv"}
    extraction.extract_nidps(
        [root / "ukb_main.csv"],
        out["nidps"],
        out["descriptions"],
        subjects=root / "subjects.tsv",
        fields=root / "fields.txt",
        instances=[2],
    )
    return main, out, root


def test_funpack_reads_the_main_dataset_with_fmrib_configuration(extracted):
    main, out, _ = extracted
    table = nidps.read_subject_table(out["nidps"])
    assert list(table.index) == [str(e) for e in EIDS]
    # the visits asked for only; fields outside the list (31) or the visits (30740) are absent
    baseline = [c for c in table.columns if re.match(r"^\d+-0\.", c) and c[:5] != "6150-"]
    assert not baseline  # (6150-0.0 is 6150's value 0, "none of the above")
    assert "31-0.0" not in table and "30740-0.0" not in table and "20116-0.0" not in table
    # FMRIB's configuration: 1558 recoded (1 daily -> 5, 6 never -> 0), negative codes missing
    assert sorted(table["1558-2.0"].dropna().unique()) == [0, 1, 2, 3, 4, 5]
    refused = main["20116-2.0"].isna() | (main["20116-2.0"] < 0)
    assert table["20116-2.0"].isna().to_numpy().tolist() == refused.tolist()
    # 6150 binarised across the kept visit: baseline's heart attacks (every subject) are not in
    vasc = [c for c in table.columns if c.startswith("6150-")]
    assert sorted(vasc) == ["6150-0.0", "6150-1.0", "6150-2.0", "6150-3.0", "6150-4.0"]
    assert table["6150-1.0"].sum() == N // len(VASCULAR)  # at the imaging visit: [1, 4] only
    descriptions = nidps.read_descriptions(out["descriptions"])
    assert set(descriptions) == set(table.columns)
    assert descriptions["6150-3.0"].endswith("(3.0 - Stroke)")


def test_the_nidp_table_is_one_column_per_indicator_labelled_with_meanings(extracted):
    main, out, _ = extracted
    table = nidps.read_subject_table(out["nidps"])
    matrix, dropped = nidps.prepare(table, min_subjects=20, instances=[2])
    cols = list(matrix.columns)
    assert [c for c in cols if c.startswith("20116")] == [
        "20116-2.0=0",
        "20116-2.0=1",
        "20116-2.0=2",
    ]  # three levels: each against the others
    assert [c for c in cols if c.startswith("2443")] == ["2443-2.0=1"]  # two levels: one test
    assert [c for c in cols if c.startswith("6138")] == [f"6138-2={k}" for k in (1, 2, 3, 4, 5)]
    assert {"6150-0.0", "6150-1.0", "6150-2.0", "6150-3.0", "6150-4.0"} <= set(cols)
    assert not any("=" in c for c in cols if c.startswith("6150"))  # FUNPACK's own 0/1 columns
    assert {"4080-2.0", "4080-2.1", "25781-2.0"} <= set(cols)

    # the answers, subject by subject: the arrays pooled per level (FMRIB's recoding: 1
    # degree -> 5, 2 A levels -> 4, 5 NVQ -> 3, 6 other -> 2, 3 O levels and 4 CSEs -> 1);
    # "none of the above" (-7), refused (-3) and no answer are missing
    quals = matrix[[f"6138-2={k}" for k in (1, 2, 3, 4, 5)]].to_numpy()
    expected = {
        0: [1, 0, 0, 0, 1], 1: [0, 0, 0, 1, 0], 5: [1, 1, 1, 0, 0], 6: [0, 0, 0, 1, 1],
        7: [1, 1, 1, 0, 0], 8: [1, 0, 0, 1, 0], 9: [0, 1, 0, 0, 1], 10: [1, 0, 1, 1, 0],
        11: [1, 1, 0, 0, 1],
    }  # fmt: skip
    for i in range(len(QUALIFICATIONS)):
        if i in expected:
            assert quals[i].tolist() == expected[i], i
        else:
            assert np.isnan(quals[i]).all(), i
    raw = main["2443-2.0"].to_numpy()
    expected = np.where(raw >= 0, raw, np.nan)  # yes 1, no 0; do not know, refused: missing
    assert np.array_equal(matrix["2443-2.0=1"].to_numpy(), expected, equal_nan=True)

    # no test twice: no column equals, or complements, another on the same subjects
    values = matrix.to_numpy()
    for a, b in itertools.combinations(range(values.shape[1]), 2):
        x, y = values[:, a], values[:, b]
        same = np.array_equal(np.isnan(x), np.isnan(y))
        ok = ~np.isnan(x)
        assert not (same and np.array_equal(x[ok], y[ok])), (cols[a], cols[b])
        assert not (same and np.array_equal(x[ok], 1 - y[ok])), (cols[a], cols[b])

    titles = nidps.labels(cols, nidps.read_descriptions(out["descriptions"])).set_index("nidp")
    title = titles.title
    assert title["20116-2.0=2"] == "Smoking status: Current"
    assert title["2443-2.0=1"] == "Diabetes diagnosed by doctor: Yes"
    assert title["1558-2.0=5"] == "Alcohol intake frequency: Daily or almost daily"
    assert title["1558-2.0=0"] == "Alcohol intake frequency: Never"
    assert title["6138-2=5"] == "Qualifications: College or University degree"
    assert title["6138-2=1"] == "Qualifications: O levels/GCSEs or equivalent / CSEs or equivalent"
    assert title["6150-0.0"] == "Vascular/heart problems diagnosed by doctor: None of the above"
    assert title["6150-4.0"] == "Vascular/heart problems diagnosed by doctor: High blood pressure"
    assert title["4080-2.1"] == "Systolic blood pressure, automated reading"
    assert not title.str.contains(" = ").any()  # every level decoded to words
    assert titles.category["6150-4.0"] == "health and medical history, health outcomes"
    assert dropped.empty or not dropped.reason.str.startswith("instance").any()


def test_without_a_field_list_fmrib_recommended_categories_are_extracted(tmp_path, caplog):
    write_main_dataset(tmp_path / "main.csv", quoted=False)
    with caplog.at_level("INFO", logger=extraction.log.name):
        out = extraction.extract_nidps(
            tmp_path / "main.csv", tmp_path / "n.tsv", tmp_path / "d.tsv", instances=[2]
        )
    table = nidps.read_subject_table(tmp_path / "n.tsv")
    assert out.subjects.item() == N
    # 31 (sex) is in FMRIB's category 1; 20116 in "tobacco"; 30740 is of the baseline only
    assert {"31-0.0", "20116-2.0", "6150-4.0"} <= set(table.columns)
    assert "30740-0.0" not in table.columns
    # FUNPACK's one line per recommended field this dataset lacks (thousands) is one count
    lines = [r.getMessage() for r in caplog.records]
    assert not [ln for ln in lines if "not present in" in ln]
    quiet = [ln for ln in lines if "absent from this main dataset not shown" in ln]
    assert len(quiet) == 1 and int(quiet[0].split()[1]) > 1000


def test_a_main_dataset_that_is_not_one_is_an_error_naming_it(tmp_path):
    cases = {
        "tabs.csv": "eid\t20116-2.0\n1\t0\n",
        "no_eid.csv": "id,20116-2.0\n1,0\n",
        "not_ukb.csv": "eid,age,bmi\n1,60,25\n",
        "empty.csv": "",
    }
    messages = {
        "tabs.csv": "tab-separated",
        "no_eid.csv": "first column must be 'eid'",
        "not_ukb.csv": "showcase layout",
        "empty.csv": "empty",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputDataError, match=messages[name]) as err:
            extraction.main_dataset_fields(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
    (tmp_path / "rap.csv").write_text("eid,p20116_i2,p6150_i2_a0\n1,0,1\n")
    assert extraction.main_dataset_fields(tmp_path / "rap.csv") == {20116, 6150}


def test_a_field_list_is_whole_numbers_naming_the_line(tmp_path):
    path = tmp_path / "fields.txt"
    path.write_text("# fields\n20116, 6150  # smoking, vascular\n\n21001\n20116\n")
    assert extraction.read_field_list(path) == [20116, 6150, 21001]
    path.write_text("20116\nsmoking\n")
    with pytest.raises(InputDataError, match="line 2: 'smoking' is not a UK Biobank field id"):
        extraction.read_field_list(path)
    path.write_text("# nothing\n")
    with pytest.raises(InputDataError, match="names no field"):
        extraction.read_field_list(path)


def test_fields_absent_from_the_main_dataset_are_an_error(tmp_path):
    write_main_dataset(tmp_path / "main.csv")
    (tmp_path / "fields.txt").write_text("99999\n88888\n")
    with pytest.raises(InputDataError, match="none of the 2 fields"):
        extraction.extract_nidps(
            tmp_path / "main.csv", tmp_path / "n.tsv", tmp_path / "d.tsv",
            fields=tmp_path / "fields.txt",
        )  # fmt: skip
    assert not (tmp_path / "n.tsv").exists()


def test_a_funpack_failure_is_one_line_and_leaves_no_output(tmp_path):
    (tmp_path / "main.csv").write_text('eid,20116-2.0\n1,0\n"2,1\n3\n')  # an open quote
    with pytest.raises(InputDataError, match="FUNPACK") as err:
        extraction.extract_nidps(tmp_path / "main.csv", tmp_path / "n.tsv", tmp_path / "d.tsv")
    assert "\n" not in str(err.value) and str(tmp_path / "main.csv") in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main.csv"]


def test_the_association_table_of_an_extracted_dataset(extracted, tmp_path):
    """all.tsv from FUNPACK's table: configured visit only, one test per indicator, words."""
    from agemapper.stats import associations as A

    main, out, _ = extracted
    rng = np.random.default_rng(5)
    subjects = EIDS.astype(str)
    deltas = pd.DataFrame(
        {
            "subject": subjects,
            "sex": rng.choice(["female", "male"], N),
            "split": "test",
            "half": np.where(np.arange(N) % 2 == 0, "A", "B"),
            "age": rng.uniform(45, 80, N),
            "contrast": "T1",
            "delta_corrected": rng.standard_normal(N),
        }
    )
    deltas.to_csv(tmp_path / "all.csv", index=False)
    confounds = pd.DataFrame({"eid": subjects, "site": rng.choice([1, 2], N)})
    confounds.to_csv(tmp_path / "confounds.tsv", sep="\t", index=False)
    cfg = {"groups": ["pooled"], "confounds": ["site"], "categorical_confounds": ["site"],
           "min_subjects": 20, "instances": [2]}  # fmt: skip
    files = [tmp_path / f"{k}.tsv" for k in ("all", "significant", "dropped")]
    table = A.run_associations(
        tmp_path / "all.csv", out["nidps"], tmp_path / "confounds.tsv", cfg, *files,
        descriptions=out["descriptions"],
    )  # fmt: skip
    written = pd.read_csv(files[0], sep="\t")
    assert len(written) == len(table) and written.nidp.is_unique  # one contrast, one group
    fields = {int(c.split("-")[0]) for c in written.nidp}
    assert fields == {20116, 2443, 1558, 6138, 6150, 4080, 25781}
    assert not written.nidp.str.match(r"^(?!6150)\d+-0\.").any()  # no baseline column
    assert written.title.str.len().gt(0).all() and not written.title.str.contains(" = ").any()
    assert set(written.title[written.field == 2443]) == {"Diabetes diagnosed by doctor: Yes"}
