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
    outputs["nidps"] = tmp_path / "ukb_main.csv"  # the main dataset, as UK Biobank ships it
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
    header = outputs["nidps"].read_text().split("\n", 1)[0]
    assert header.startswith('"eid","31-0.0","34-0.0",')  # quoted, sorted by field
    nidps = pd.read_csv(outputs["nidps"])
    assert {"20116-0.0", "20116-2.0", "4080-2.1", "6138-2.5", "6150-0.3"} <= set(nidps.columns)
    assert len(nidps) == 8 and nidps.isna().any().any()
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


def test_the_main_dataset_has_the_showcase_layout_codes_and_gaps():
    from agemapper.stats import ukb

    rng = np.random.default_rng(0)
    n = 2000
    subjects = pd.DataFrame(
        {
            "subject": [str(1_000_000 + i) for i in range(n)],
            "sex": rng.choice(["female", "male"], n),
            "age": rng.uniform(45, 80, n),
        }
    )
    main, _ = cohort.phenotypes(subjects, cohort.latent_variables(subjects, seed=2), seed=2)
    showcase = ukb.field_table()
    by_field: dict[int, set] = {}
    for col in main.columns[1:]:
        field, rest = col.split("-")
        by_field.setdefault(int(field), set()).add(tuple(map(int, rest.split("."))))
    assert set(cohort.nidp_fields()) | set(cohort.OTHER_FIELDS) == set(by_field)
    for field, slots in by_field.items():
        arrays = int(showcase.array_max[field]) + 1
        instances = {i for i, _ in slots}
        assert slots == {(i, a) for i in instances for a in range(arrays)}, field  # all arrays
        assert instances <= {0, 2}, field
    assert {i for i, _ in by_field[20116]} == {0, 2}  # both visits ...
    assert {i for i, _ in by_field[25781]} == {2} and {i for i, _ in by_field[30740]} == {0}
    codes = main[[f"6138-2.{a}" for a in range(6)]].stack().dropna()
    assert set(codes.unique()) == {1, 2, 3, 4, 5, 6, -7, -3}  # real codes, negative ones too
    assert main["6138-2.5"].isna().mean() > 0.95 and main["6150-2.3"].isna().mean() > 0.95
    assert set(main["20116-2.0"].dropna().unique()) == {0, 1, 2, -3}
    assert set(main["1160-2.0"].dropna()[main["1160-2.0"] < 0].unique()) == {-1, -3}
    assert main["20116-2.0"].isna().mean() > 0  # missing values
    # the demo's field list is the generator's nIDP fields
    listed = [int(line.split("#")[0]) for line in (REPO / "config/nidp_fields.txt").open()
              if line.split("#")[0].strip()]  # fmt: skip
    assert listed == cohort.nidp_fields()
