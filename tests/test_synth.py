import numpy as np
import pandas as pd
import pytest

from agemapper.images.contrasts import read_contrasts, select
from agemapper.images.grids import GRIDS
from agemapper.images.nifti import load_volume
from agemapper.images.preprocess import preprocess_volume
from agemapper.images.subjects import read_subjects
from agemapper.synth import anatomy as A
from agemapper.synth import cohort
from conftest import REPO


@pytest.fixture(scope="module")
def table():
    return read_contrasts(REPO / "config/contrasts.tsv")


def test_templates_land_on_fsl_grids():
    t = A.templates_1mm()
    assert t["gm"].shape == GRIDS["1mm"].shape
    # FSL MNI152 1 mm: voxel (90, 126, 72) is the origin; it lies inside the brain
    assert t["brain"][90, 126, 72]
    # left-right: x = 90 - i, so the grid is flipped relative to ICBM's; the brain is symmetric
    assert abs(t["brain"][:91].sum() / t["brain"][91:].sum() - 1) < 0.05
    a2 = A.anatomy("2mm")
    assert a2.shape == GRIDS["2mm"].shape and a2.maps["components"].shape[0] == 25


def test_sampling_keeps_released_ages_and_halves():
    splits = read_subjects(REPO / "datasets/ukb_subjects.tsv")
    counts = {"train": 5, "validation": 3, "testA": 2, "testB": 2}
    s = cohort.sample_subjects(splits, counts, seed=1)
    assert len(s) == 24 and s.subject.is_unique
    merged = s.merge(splits, on="subject", suffixes=("", "_released"))
    assert np.allclose(merged.age, merged.age_released)
    assert (merged.split == merged.split_released).all()
    assert sorted(s[s.split == "test"].half.unique()) == ["A", "B"]
    assert s.equals(cohort.sample_subjects(splits, counts, seed=1))  # reproducible


def test_ageing_changes_images_the_way_the_recipes_say(table):
    a1 = A.anatomy("1mm")
    subj = {
        "site": 11025,
        "head_size": 1.0,
        "motion_z": 0.0,
        "noise": 0.0,
        "anatomy": np.zeros(6, np.float32),
        "component_sensitivity": np.ones(25),
    }
    m = a1.maps

    def render(name, t):
        return cohort.render(table[name], a1, t, subj, np.random.default_rng(0))

    young, old = render("T1_nonlinear", -1.5), render("T1_nonlinear", 1.5)
    near_ventricles = m["dist_vent"] < 8
    assert old[near_ventricles].mean() < young[near_ventricles].mean()  # CSF is dark on T1
    assert old[m["cortical"] > 0.5].mean() < young[m["cortical"] > 0.5].mean()  # GM loss
    swi_y, swi_o = render("swi", -1.5), render("swi", 1.5)
    deep = m["deep"] > 0
    assert swi_o[deep].mean() < swi_y[deep].mean() - 5  # iron lowers T2*
    assert swi_o[near_ventricles].mean() > swi_y[near_ventricles].mean()  # CSF is bright on T2*
    fa_y, fa_o = render("tbss_FA_s", -1.5), render("tbss_FA_s", 1.5)
    skel = m["skeleton"] > 0
    assert fa_o[skel].mean() < fa_y[skel].mean() and (fa_o[~skel] == 0).all()
    flair_y, flair_o = render("T2_nonlinear", -1.5), render("T2_nonlinear", 1.5)
    pv = m["periventricular"] > 0.5
    assert flair_o[pv].mean() > flair_y[pv].mean()  # hyperintensities grow


def test_generated_cohort_is_readable_in_the_ukb_layout(tmp_path, table):
    splits = read_subjects(REPO / "datasets/ukb_subjects.tsv")
    chosen = select(table, ["T1_nonlinear", "rsfmri_3", "vbm"])
    names = [
        "subjects",
        "nidps",
        "confounds",
        "latent_deltas",
        "planted",
        "latent_variables",
        "summary",
    ]
    outputs = {k: tmp_path / f"{k}.{'json' if k == 'summary' else 'tsv'}" for k in names}
    counts = {"train": 2, "validation": 1, "testA": 1, "testB": 0}
    cohort.generate(splits, chosen, tmp_path / "subjects", outputs, counts, seed=3)
    subjects = pd.read_csv(outputs["subjects"], sep="\t", dtype={"subject": str})
    assert len(subjects) == 8
    for c in chosen:
        for s in subjects.subject:
            vol = load_volume(
                c.path_for(tmp_path / "subjects", s), GRIDS[c.resolution], c.volume, subject=s
            )
            out, stats = preprocess_volume(vol, c, (40, 48, 40))
            assert np.isfinite(out).all() and stats["nonzero"] > 0.05
    nidps = pd.read_csv(outputs["nidps"], sep="\t")
    assert nidps.columns[0] == "eid" and "20116-2.0" in nidps.columns and "4080-2.1" in nidps
    assert nidps.isna().any().any() and (nidps["20116-2.0"] == -3).sum() >= 0
    truth = pd.read_csv(outputs["latent_deltas"], sep="\t", dtype={"subject": str})
    assert len(truth) == 8 * 3
    lat = pd.read_csv(outputs["latent_variables"], sep="\t", dtype={"subject": str}).iloc[0]
    row = truth[(truth.subject == lat.subject) & (truth.contrast == "vbm")].iloc[0]
    assert row.true_delta == pytest.approx(
        lat.shared + lat["family:structural"] + cohort.own_delta(3, lat.subject, "vbm")
    )


def test_planted_drivers_show_in_the_phenotypes():
    rng = np.random.default_rng(0)
    n = 4000
    subjects = pd.DataFrame(
        {
            "subject": [str(i) for i in range(n)],
            "sex": rng.choice(["female", "male"], n),
            "age": rng.uniform(45, 80, n),
        }
    )
    lat = cohort.latent_variables(subjects, seed=5)
    nidps, planted = cohort.phenotypes(subjects, lat, seed=5)
    r = np.corrcoef(lat["family:flair"], nidps["25781-2.0"].fillna(nidps["25781-2.0"].mean()))
    assert r[0, 1] > 0.4
    assert abs(np.corrcoef(lat["shared"], nidps["30010-2.0"].fillna(4.5))[0, 1]) < 0.05
    assert set(planted[planted.driver == "shared"].field) == {20016, 20116}
