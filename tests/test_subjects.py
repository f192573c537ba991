import pandas as pd
import pytest

from agemapper.errors import InputDataError
from agemapper.images import subjects
from conftest import REPO, write_released_splits


def test_released_pairs_become_one_tidy_table(tmp_path):
    table = subjects.read_released(write_released_splits(tmp_path))
    assert list(table.columns) == subjects.COLUMNS
    assert len(table) == 26
    test = table[table.split == "test"]
    assert sorted(test.half.unique()) == ["A", "B"]
    assert (table[table.split != "test"].half == "").all()
    # a directory is accepted wherever a table is
    assert subjects.read_subjects(tmp_path).equals(table)


def test_small_selection_has_no_halves(tmp_path):
    table = subjects.read_released(write_released_splits(tmp_path, small=True), small=True)
    assert (table.half == "").all() and len(table) == 26


def test_committed_dataset_matches_the_release_sizes():
    table = subjects.read_subjects(REPO / "datasets/ukb_subjects.tsv")
    size = table.groupby(["sex", "split"]).size()
    assert size["male", "train"] == 8184 and size["female", "train"] == 9412
    assert size["male", "validation"] == 1091 and size["female", "test"] == 5020
    assert (table[table.split == "test"].half != "").all()
    excluded = subjects.read_excluded(REPO / "datasets/ukb_excluded.txt")
    assert len(excluded) == 41 and not table.subject.isin(excluded).any()
    assert table.subject.is_unique
    assert 45 < table.age.min() and table.age.max() < 83


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(age="abc"), "age"),
        (dict(age=12.0), "age"),
        (dict(sex="other"), "sex"),
        (dict(split="holdout"), "split"),
        (dict(half="C", split="test"), "half"),
    ],
)
def test_bad_rows_name_the_subject(tmp_path, change, message):
    table = pd.DataFrame(
        {
            "subject": ["1", "2"],
            "sex": ["male"] * 2,
            "split": ["train"] * 2,
            "half": ["", ""],
            "age": [60.0, 61.0],
        }
    )
    for k, v in change.items():
        table[k] = table[k].astype(object)
        table.loc[1, k] = v
    path = tmp_path / "s.tsv"
    table.to_csv(path, sep="\t", index=False)
    with pytest.raises(InputDataError, match=rf"subject 2.*{message}"):
        subjects.read_subjects(path)


def test_subject_in_two_splits_is_refused(tmp_path):
    table = pd.DataFrame(
        {
            "subject": ["7", "7"],
            "sex": ["male"] * 2,
            "split": ["train", "test"],
            "half": ["", "A"],
            "age": [60.0, 60.0],
        }
    )
    path = tmp_path / "s.tsv"
    table.to_csv(path, sep="\t", index=False)
    with pytest.raises(InputDataError, match="subject 7.*more than once"):
        subjects.read_subjects(path)


def test_excluded_subjects_are_left_out(tmp_path):
    table = subjects.read_released(write_released_splits(tmp_path))
    out = subjects.read_subjects(tmp_path, excluded={table.subject[0]})
    assert len(out) == len(table) - 1
