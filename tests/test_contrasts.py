import pandas as pd
import pytest

from agemapper.errors import ConfigError
from agemapper.images import contrasts
from conftest import REPO


def test_table_has_all_57_contrasts_with_4d_indices():
    table = contrasts.read_contrasts(REPO / "config/contrasts.tsv")
    assert len(table) == 57
    assert table["rsfmri_7"].volume == 7 and table["rsfmri_7"].resolution == "2mm"
    assert table["T1_nonlinear"].volume is None and table["T1_nonlinear"].normalise == "mean"
    assert table["swi"].normalise == "none"
    assert {c.normalise for c in table.values() if c.normalise == "mean"} == {"mean"}
    assert sorted(n for n, c in table.items() if c.normalise == "mean") == sorted(
        contrasts.MEAN_NORMALISED
    )


def test_released_table_round_trips(tmp_path):
    src = REPO / "config/contrasts.tsv"
    table = pd.read_csv(src, sep="\t")
    assert list(table.columns) == contrasts.COLUMNS


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: pd.concat([t, t.iloc[[0]]]), "listed twice"),
        (lambda t: t.assign(resolution="3mm"), "resolution"),
        (lambda t: t.assign(normalise="zscore"), "normalise"),
        (lambda t: t.assign(scale_factor=-1.0), "scale_factor"),
        (lambda t: t.assign(scale_factor=float("inf")), "scale_factor .* not finite"),
        (lambda t: t.assign(data_file="/abs/file.nii.gz"), "relative"),
        (lambda t: t.drop(columns=["volume"]), "missing"),
    ],
)
def test_bad_tables_are_refused_with_the_reason(tmp_path, edit, message):
    table = pd.read_csv(REPO / "config/contrasts.tsv", sep="\t").head(3)
    path = tmp_path / "c.tsv"
    edit(table).to_csv(path, sep="\t", index=False)
    with pytest.raises(ConfigError, match=message):
        contrasts.read_contrasts(path)


def test_unknown_contrast_is_named():
    table = contrasts.read_contrasts(REPO / "config/contrasts.tsv")
    with pytest.raises(ConfigError, match="T3_nonlinear"):
        contrasts.select(table, ["T1_nonlinear", "T3_nonlinear"])


def test_paths_follow_the_ukb_layout():
    table = contrasts.read_contrasts(REPO / "config/contrasts.tsv")
    path = table["tbss_FA_s"].path_for("/data", 1234567)
    assert str(path) == "/data/1234567/dMRI/TBSS/stats/all_FA_skeletonised.nii.gz"
