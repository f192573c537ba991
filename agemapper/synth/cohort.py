"""A synthetic UK Biobank imaging cohort with known brain-age deltas and planted associations.

Subjects are drawn (with their real ages, sexes and splits) from the released split table, so
ids, ages and test halves look exactly like the study's. Each subject gets

- latent brain-age deltas: a shared part, a part per modality family and a small part per
  contrast (``delta_c = shared + family + own``); contrast c is generated at biological age
  ``age + delta_c``;
- confounds that touch images and phenotypes: assessment centre (site; intensity gain and
  noise), head size (modulated VBM), head motion (rsfMRI amplitude and noise, FA), with motion
  rising with age and BMI;
- images in UK Biobank's layout ``{subject}/{data_file}`` on FSL's MNI152 grids, with
  contrast-specific ageing: grey-matter loss and ventricle/sulcal CSF growth (T1, VBM),
  periventricular white-matter hyperintensities (T2 FLAIR), iron in deep grey matter (SWI),
  white-matter FA decline (TBSS), weaker resting-state networks (25-component 4D rsfMRI);
- nIDPs as a UK Biobank user downloads them: the main dataset, a CSV in the showcase layout
  (``eid`` + ``field-instance.array`` for every array of each field, instances 0 and 2 where the
  showcase has them, real codes with negative "do not know" / "prefer not to answer" / "none of
  the above" codes, missing values, and a few columns that are not nIDPs), which the workflow
  turns into the nIDP table with FUNPACK. Some are driven by latent deltas (planted), some by
  confounds only, some are pure noise; categorical single and multiple-choice fields.

The ground truth (latent deltas, planted associations) is written next to the data.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agemapper.images.contrasts import Contrast
from agemapper.images.grids import get_grid
from agemapper.images.nifti import write_volume
from agemapper.io import write_json, write_table
from agemapper.progress import Progress
from agemapper.seeds import derive_seed
from agemapper.synth.anatomy import anatomy

log = logging.getLogger(__name__)

SITES = {11025: (1.00, 1.00), 11026: (1.06, 1.25), 11027: (0.95, 0.85)}  # gain, noise factor
SITE_P = (0.55, 0.30, 0.15)


def storage(contrast: str) -> tuple[type, float | None]:
    """On-disk type and quantum (about a third of the noise level, which keeps files small)."""
    if contrast == "T2_lesions":
        return np.uint8, 1.0
    if contrast.startswith("tbss_") and not any(k in contrast for k in ("FA", "ICVF", "OD", "MO")):
        return np.float32, None  # diffusivities are ~1e-3 mm^2/s
    quanta = {
        "T1_nonlinear": 4.0,
        "T1_linear": 4.0,
        "T2_nonlinear": 3.0,
        "vbm": 0.01,
        "jacobian": 0.005,
        "swi": 1.0,
        "tracts": 0.01,
    }
    if contrast in quanta:
        return np.int16, quanta[contrast]
    family = family_of(contrast)
    if family == "diffusion":
        return np.int16, 0.01
    if family == "rsfmri":
        return np.int8, 0.5  # half the bytes of int16: the 4D file dominates generation time
    return np.int16, (36.0 if "_c_" in contrast else 0.3)  # task fMRI cope / zstat


LATENT_SD = {"shared": 2.5, "family": 2.5, "own": 1.0}  # years

FAMILIES = {
    "structural": ("T1_nonlinear", "T1_linear", "vbm", "jacobian"),
    "flair": ("T2_nonlinear", "T2_lesions"),
    "swi": ("swi",),
    "diffusion": ("tbss_", "tracts"),
    "rsfmri": ("rsfmri_",),
    "tfmri": ("tfmri_",),
}


def family_of(contrast: str) -> str:
    for family, members in FAMILIES.items():
        if any(contrast == m or (m.endswith("_") and contrast.startswith(m)) for m in members):
            return family
    raise ValueError(f"no synthetic recipe for contrast {contrast!r}")


# --------------------------------------------------------------------------- nIDP specification
# The main dataset a UK Biobank user downloads: real field ids, the showcase's arrays, instances
# 0 (baseline) and 2 (imaging visit) where the showcase has them, real codes with negative ones
# ("do not know" -1, "prefer not to answer" -3, "none of the above" -7) and missing values.
# column, value type, driver -> loading (standardised), parameters; "shared" and "family:x"
# drive planted associations, "conf:*" only confounds, no driver = null. A field's instance-0
# values have the same drivers as its imaging-visit values, with fresh noise.
# fmt: off
NIDPS = [
    # planted: driven by part of the latent deltas
    dict(field=4080, arrays=2, kind="integer", drivers={"family:flair": 0.6}, mean=138, sd=18,
         missing=0.06),  # systolic blood pressure
    dict(field=25781, instances=(2,), kind="continuous", drivers={"family:flair": 0.7}, mean=8.0,
         sd=0.8, log=True, missing=0.05),  # white matter hyperintensity volume
    dict(field=20016, kind="integer", drivers={"shared": -0.5}, mean=6.5, sd=2.0, lo=0, hi=13,
         missing=0.25),  # fluid intelligence score
    dict(field=20116, kind="categorical", drivers={"shared": 0.55}, levels=(0, 1, 2),
         cuts=(0.2, 1.1), refuse=0.03, missing=0.02),  # smoking status
    dict(field=1558, kind="categorical", drivers={"family:swi": -0.6}, levels=(1, 2, 3, 4, 5, 6),
         cuts=(-1.0, -0.3, 0.3, 0.8, 1.3), refuse=0.02, missing=0.02),  # alcohol (1 = daily)
    dict(field=30000, kind="continuous", drivers={"family:diffusion": 0.55}, mean=6.8, sd=1.7,
         missing=0.10),  # white blood cell count
    dict(field=21001, kind="continuous", drivers={"family:structural": 0.5}, mean=26.5, sd=4.2,
         missing=0.03),  # BMI (also raises head motion)
    dict(field=23099, kind="continuous", drivers={"family:rsfmri": 0.6}, mean=30.0, sd=7.0,
         missing=0.08),  # body fat percentage
    dict(field=6150, arrays=4, kind="multiple", drivers={"family:flair": 1.2},
         levels=(1, 2, 3, 4), prevalence=(0.05, 0.06, 0.04, 0.3), refuse=0.02,
         missing=0.02),  # vascular/heart problems (4 = high blood pressure); -7 = none
    # confound-driven only (spurious unless deconfounded)
    dict(field=50, kind="continuous", drivers={"conf:sex": 0.75, "conf:head_size": -0.5},
         mean=170, sd=9.0, missing=0.02),  # standing height
    dict(field=25741, instances=(2,), kind="continuous", drivers={"conf:motion": 0.9}, mean=0.12,
         sd=0.05, missing=0.05),  # rfMRI head motion (as an nIDP)
    # nulls
    dict(field=4079, arrays=2, kind="integer", drivers={}, mean=82, sd=10, missing=0.06),
    dict(field=20023, kind="integer", drivers={}, mean=560, sd=110, missing=0.05),
    dict(field=30010, kind="continuous", drivers={}, mean=4.5, sd=0.4, missing=0.10),
    # blood biochemistry: baseline only (the showcase has no imaging-visit values)
    dict(field=30740, instances=(0,), kind="continuous", drivers={}, mean=5.1, sd=1.0,
         missing=0.12),
    dict(field=30780, instances=(0,), kind="continuous", drivers={}, mean=3.5, sd=0.9,
         missing=0.10),
    dict(field=30870, instances=(0,), kind="continuous", drivers={}, mean=1.7, sd=0.9,
         missing=0.10),
    dict(field=48, kind="continuous", drivers={}, mean=88, sd=13, missing=0.02),
    dict(field=1160, kind="integer", drivers={}, mean=7.0, sd=1.1, lo=3, hi=12, missing=0.03,
         dont_know=0.01),  # sleep duration (-1 do not know, -3 prefer not to answer)
    dict(field=1180, kind="categorical", drivers={}, levels=(1, 2, 3, 4), cuts=(-0.8, 0, 0.8),
         refuse=0.05, missing=0.02),  # chronotype
    dict(field=2443, kind="categorical", drivers={}, levels=(0, 1), cuts=(1.3,), refuse=0.01,
         missing=0.02),  # diabetes diagnosed by doctor
    dict(field=1239, kind="categorical", drivers={}, levels=(0, 1, 2), cuts=(1.0, 1.6),
         refuse=0.01, missing=0.02),  # current tobacco smoking
    dict(field=6138, arrays=6, kind="multiple", drivers={}, levels=(1, 2, 3, 4, 5, 6),
         prevalence=(0.35, 0.45, 0.55, 0.15, 0.2, 0.3), refuse=0.02,
         missing=0.03),  # qualifications; -7 = none of the above
    dict(field=20019, kind="continuous", drivers={}, mean=-5.0, sd=3.0, missing=0.2),
    dict(field=23104, kind="continuous", drivers={}, mean=27.0, sd=4.0, missing=0.08),
    dict(field=4194, kind="integer", drivers={}, mean=66, sd=10, missing=0.3),
    dict(field=20015, kind="continuous", drivers={}, mean=90, sd=4, missing=0.02),
]
# fmt: on
VISITS = (0, 2)  # instances written (where a field's spec does not say otherwise)
# columns of the main dataset that are not nIDPs (left out by the demo's field list)
OTHER_FIELDS = {31: "sex", 34: "year of birth", 54: "assessment centre", 21003: "age at visit"}


def nidp_fields() -> list[int]:
    """The fields of the synthetic nIDPs (the demo's field list, config/nidp_fields.txt)."""
    return [spec["field"] for spec in NIDPS]


@dataclass(frozen=True)
class Design:
    seed: int
    counts: dict  # split/half -> subjects per sex
    contrasts: tuple  # Contrast objects whose files to write
    noise: float = 1.0  # multiplies every image's noise


# --------------------------------------------------------------------------- subjects + latents


def sample_subjects(splits: pd.DataFrame, counts: dict, seed: int) -> pd.DataFrame:
    """Draw subjects per sex from the released splits, keeping their ages, splits and halves."""
    rng = np.random.default_rng(seed)
    parts = []
    for sex in ("female", "male"):
        for key, n in counts.items():
            if key in ("testA", "testB"):
                pool = splits[
                    (splits.sex == sex) & (splits.split == "test") & (splits.half == key[-1])
                ]
            else:
                pool = splits[(splits.sex == sex) & (splits.split == key)]
            if n > len(pool):
                raise ValueError(f"asked for {n} {sex} {key} subjects; the splits have {len(pool)}")
            parts.append(pool.iloc[np.sort(rng.choice(len(pool), size=n, replace=False))])
    out = pd.concat(parts, ignore_index=True)
    return out[["subject", "sex", "split", "half", "age"]]


def latent_variables(subjects: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Shared and family deltas, confounds and phenotype drivers for every subject."""
    rng = np.random.default_rng(derive_seed(seed, "latent"))
    n = len(subjects)
    lat = pd.DataFrame({"subject": subjects.subject.to_numpy()})
    lat["shared"] = rng.standard_normal(n) * LATENT_SD["shared"]
    for family in FAMILIES:
        lat[f"family:{family}"] = rng.standard_normal(n) * LATENT_SD["family"]
    female = (subjects.sex == "female").to_numpy()
    age_z = (subjects.age.to_numpy() - 64.0) / 7.5
    lat["site"] = rng.choice(list(SITES), size=n, p=SITE_P)
    lat["head_size"] = 1.0 - 0.07 * (~female) + 0.07 * female + 0.06 * rng.standard_normal(n)
    lat["bmi_z"] = rng.standard_normal(n)
    lat["motion"] = np.exp(
        np.log(0.12) + 0.18 * age_z + 0.2 * lat.bmi_z + 0.3 * rng.standard_normal(n)
    )
    return lat


def own_delta(seed: int, subject: str, contrast: str) -> float:
    rng = np.random.default_rng(derive_seed(seed, "own", subject, contrast))
    return float(rng.standard_normal() * LATENT_SD["own"])


def true_delta(lat_row, seed: int, contrast: str) -> float:
    return float(
        lat_row["shared"]
        + lat_row[f"family:{family_of(contrast)}"]
        + own_delta(seed, str(lat_row["subject"]), contrast)
    )


# --------------------------------------------------------------------------- image recipes


_NOISE_BANK: dict = {}


def white_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """n standard normal values: a window, at a random offset, of a fixed bank of white noise.

    Drawing 14 million fresh normals per subject was half of the generation time; a random
    window of a 2^24-value bank is as white and still determined by ``rng``.
    """
    size = 1 << 24
    if "bank" not in _NOISE_BANK:
        bank_rng = np.random.default_rng(20231)
        _NOISE_BANK["bank"] = bank_rng.standard_normal(size + (1 << 22), dtype=np.float32)
    if n > 1 << 22:
        return rng.standard_normal(n, dtype=np.float32)
    start = int(rng.integers(0, size))
    return _NOISE_BANK["bank"][start : start + n]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _tissues(a, t: float, indiv: np.ndarray):
    """Grey-matter loss and CSF growth (ventricles, sulci) at standardised biological age t."""
    m = a.maps
    loss = np.clip(0.12 * t * m["cortical"] * (0.6 + 0.8 * m["frontal"]) + 0.05 * indiv, -0.3, 0.6)
    gm = m["gm"] * (1.0 - loss)
    radius = 2.0 + 2.2 * (t + 2.0)  # mm of ventricular expansion
    vent = _sigmoid((radius - m["dist_vent"]) / 1.5) * (m["dist_vent"] < 25)
    csf = np.maximum(m["csf"] + m["gm"] * loss, vent)
    scale = (1.0 - csf) / np.maximum(gm + m["wm"], 1e-3)
    return np.clip(gm * scale, 0, 1), np.clip(m["wm"] * scale, 0, 1), np.clip(csf, 0, 1)


def _individual(a, coef: np.ndarray) -> np.ndarray:
    return np.tensordot(coef, a.maps["fields"], axes=1)


def render(contrast: Contrast, a, t, subj: dict, rng) -> np.ndarray:
    """Voxel values of one contrast for one subject.

    Returns voxel values over the anatomy mask: shape (voxels,), or (components, voxels) for
    the 4D rsfMRI file. ``t`` is the standardised biological age (age + delta - 63) / 10 (one
    per component for rsfMRI); ``subj`` holds the subject's confounds and individual-anatomy
    coefficients.
    """
    m = a.maps
    name = contrast.name
    gain, noise_factor = SITES[subj["site"]]
    noise = noise_factor * subj["noise"]
    indiv = _individual(a, subj["anatomy"])
    fam = family_of(name)
    n = len(a.index)

    def gauss(sd):
        return white_noise(rng, n) * np.float32(sd * noise)

    if fam in ("structural", "swi") or name in ("T2_nonlinear", "T2_lesions"):
        gm, wm, csf = _tissues(a, t, indiv)
    if name in ("T1_nonlinear", "T1_linear"):
        v = (0.28 * csf + 0.60 * gm + 0.95 * wm) * (1.0 + 0.04 * indiv) * gain + gauss(0.02)
        return np.clip(v, 0, None) * 600.0
    if name == "vbm":
        v = gm * 1.6 * subj["head_size"] ** 2 * (1.0 + 0.05 * indiv) + gauss(0.04)
        return np.clip(v, 0, None)
    if name == "jacobian":
        v = (1.0 + 0.5 * (csf - m["csf"]) + 0.02 * indiv) * subj["head_size"] ** 3 + gauss(0.02)
        return np.clip(v, 0, None)
    if name in ("T2_nonlinear", "T2_lesions"):
        load = np.exp(0.8 * t) * 0.35
        lesion = np.clip(m["periventricular"] * load * (1.0 + 0.3 * indiv), 0, 1)
        if name == "T2_lesions":
            return (lesion > 0.5).astype(np.float32)
        v = (0.12 * csf + 0.72 * gm + 0.50 * wm + 0.55 * lesion) * gain + gauss(0.02)
        return np.clip(v, 0, None) * 500.0
    if name == "swi":  # T2*: iron shortens it in deep grey matter; atrophy lets CSF in
        iron = m["deep"] * (3.0 + 9.0 * (t + 2.0)) + 2.5 * m["cortical"] * (t + 2.0)
        v = 70.0 * csf + 48.0 * gm + 42.0 * wm - iron
        v = v * (1.0 + 0.03 * indiv) * gain + gauss(2.5) * (1.0 + 0.4 * subj["motion_z"])
        return np.clip(v, 0, None)
    if fam == "diffusion":
        decline = 1.0 - 0.09 * t * (0.6 + 0.8 * m["frontal"]) - 0.015 * subj["motion_z"]
        fa = (0.30 + 0.45 * m["skeleton_depth"]) * decline * (1.0 + 0.03 * indiv) + gauss(0.025)
        where = m["skeleton"] > 0 if name.endswith("_s") else m["wm"] > 0.3
        if "FA" in name or "ICVF" in name or "OD" in name or "MO" in name or name == "tracts":
            v = fa
        else:  # diffusivities (and ISOVF) rise with age where FA falls
            v = (1.0 - fa) * 1.0e-3 * (1.0 + 0.05 * t)
        return np.where(where, np.clip(v, 0, None), 0).astype(np.float32)
    if fam == "rsfmri":
        comps = m["components"]
        sens = subj["component_sensitivity"]
        amp = 14.0 * (1.0 - 0.15 * sens * t) * (1.0 - 0.12 * subj["motion_z"])
        out = np.empty((comps.shape[0], n), dtype=np.float32)
        for k in range(comps.shape[0]):
            out[k] = amp[k] * comps[k] * (1.0 + 0.05 * indiv) + gauss(1.2) * (
                1.0 + 0.3 * max(subj["motion_z"], -1.0)
            )
        return out
    if fam == "tfmri":
        comp = m["components"][3 if "5" in name else 1]
        v = 8.0 * (1.0 - 0.08 * t) * comp + gauss(1.0)
        return v * (120.0 if "_c_" in name else 1.0)
    raise ValueError(f"no synthetic recipe for contrast {name!r}")


# --------------------------------------------------------------------------- phenotypes


def _nidp_values(spec: dict, drive: np.ndarray, rng, n: int) -> np.ndarray:
    """One instance of a field: (n,) values, or (n, arrays) codes of a multiple-choice field."""
    if spec["kind"] == "multiple":  # each level chosen with a probability the drive shifts
        logit = np.log(np.asarray(spec["prevalence"]) / (1 - np.asarray(spec["prevalence"])))
        chosen = rng.random((n, len(logit))) < 1 / (1 + np.exp(-(logit + drive[:, None])))
        out = np.full((n, spec["arrays"]), np.nan)
        for i in range(n):  # answers fill the arrays in the order of the question's list
            picked = np.asarray(spec["levels"])[chosen[i]][: spec["arrays"]]
            out[i, : len(picked)] = picked
            if not len(picked):
                out[i, 0] = -7  # "none of the above"
        refused = rng.random(n) < spec.get("refuse", 0)
        out[refused] = np.nan
        out[refused, 0] = -3  # "prefer not to answer"
        return out
    if spec["kind"] == "categorical":
        score = drive + rng.standard_normal(n) * np.sqrt(max(1 - np.var(drive), 0.05))
        codes = np.asarray(spec["levels"])[np.searchsorted(spec["cuts"], score)]
        out = codes.astype(float)
        out[rng.random(n) < spec.get("refuse", 0)] = -3  # "prefer not to answer"
        return out
    noise = rng.standard_normal(n) * np.sqrt(max(1 - np.var(drive), 0.05))
    z = drive + noise
    if spec.get("log"):
        values = np.exp(spec["mean"] + spec["sd"] * z)
    else:
        values = spec["mean"] + spec["sd"] * z
    if spec["kind"] == "integer":
        values = np.round(values)
        values = np.clip(values, spec.get("lo", 0), spec.get("hi", np.inf))
        unknown = rng.random(n) < spec.get("dont_know", 0)
        values[unknown] = rng.choice([-1, -3], int(unknown.sum()))  # do not know / refused
    return values


def phenotypes(subjects: pd.DataFrame, lat: pd.DataFrame, seed: int):
    """The main dataset (showcase layout, ``eid`` + ``field-instance.array``) and the table of
    planted drivers per nIDP column."""
    rng = np.random.default_rng(derive_seed(seed, "nidps"))
    n = len(subjects)
    female = (subjects.sex == "female").to_numpy().astype(float)
    z = {
        "shared": lat["shared"].to_numpy() / LATENT_SD["shared"],
        **{
            k: lat[k].to_numpy() / LATENT_SD["family"]
            for k in lat.columns
            if k.startswith("family:")
        },
        "conf:sex": (1 - female) - (1 - female).mean(),
        "conf:head_size": (lat.head_size - lat.head_size.mean()).to_numpy() / lat.head_size.std(),
        "conf:motion": (np.log(lat.motion) - np.log(lat.motion).mean()).to_numpy()
        / np.log(lat.motion).std(),
    }
    age = subjects.age.to_numpy()
    table = {
        "31-0.0": 1 - female,  # coding 9: 0 female, 1 male
        "34-0.0": np.floor(2016.5 - age),
        "54-0.0": lat.site.to_numpy(),  # coding 10: assessment centre
        "54-2.0": lat.site.to_numpy(),
        "21003-0.0": np.floor(age - 9.0 + rng.uniform(-1, 1, n)),
        "21003-2.0": np.floor(age),
    }
    truth = []
    for spec in NIDPS:
        drive = np.zeros(n)
        for driver, loading in spec["drivers"].items():
            drive = drive + loading * z[driver]
        if spec["field"] == 21001:  # BMI also sets the motion trait
            drive = drive + 0.5 * lat.bmi_z.to_numpy()
        for instance in spec.get("instances", VISITS):
            if spec["kind"] == "multiple":
                block = _nidp_values(spec, drive, rng, n)
                block[rng.random(n) < spec["missing"]] = np.nan  # did not attend / answer
                columns = {
                    f"{spec['field']}-{instance}.{a}": block[:, a] for a in range(block.shape[1])
                }
            else:
                columns = {}
                for array in range(spec.get("arrays", 1)):
                    values = _nidp_values(spec, drive, rng, n)
                    values[rng.random(n) < spec["missing"]] = np.nan
                    columns[f"{spec['field']}-{instance}.{array}"] = values
            table.update(columns)
            for col in columns:
                for driver, loading in spec["drivers"].items() or [(None, 0.0)]:
                    truth.append(
                        {
                            "column": col,
                            "field": spec["field"],
                            "kind": spec["kind"],
                            "driver": driver or "",
                            "loading": loading,
                        }
                    )

    def order(col):
        field, rest = col.split("-")
        instance, array = rest.split(".")
        return int(field), int(instance), int(array)

    main = pd.DataFrame(table)[sorted(table, key=order)]
    main.insert(0, "eid", subjects.subject.to_numpy())
    return main, pd.DataFrame(truth)


def write_main_dataset(path, main: pd.DataFrame) -> None:
    """The main dataset as UK Biobank's CSV: every value quoted, integers without decimals."""
    import csv

    out = main.copy()
    for col in out.columns[1:]:
        values = out[col]
        if values.dropna().eq(values.dropna().round()).all():
            out[col] = values.astype("Int64")
    write_table(path, out, quoting=csv.QUOTE_ALL, float_format="%.6g")


# --------------------------------------------------------------------------- generation


def _subject_params(row, lat_row, seed: int) -> dict:
    rng = np.random.default_rng(derive_seed(seed, "subject", row.subject))
    return {
        "site": int(lat_row["site"]),
        "head_size": float(lat_row["head_size"]),
        "motion_z": float((np.log(lat_row["motion"]) - np.log(0.12)) / 0.35),
        "anatomy": rng.standard_normal(6).astype(np.float32),
        "component_sensitivity": np.concatenate(
            [[1.0], np.random.default_rng(seed).uniform(0, 1, 24)]
        ),
        "noise": 1.0,
    }


_STATE: dict = {}


def _init_worker(design: Design, data_directory: str, lat: pd.DataFrame):
    _STATE.update(
        design=design, root=Path(data_directory), lat=lat.set_index("subject", drop=False)
    )
    for res in {c.resolution for c in design.contrasts}:
        anatomy(res)


def _write_subject(row) -> int:
    design, root, lat = _STATE["design"], _STATE["root"], _STATE["lat"]
    lat_row = lat.loc[row.subject]
    params = _subject_params(row, lat_row, design.seed)
    params["noise"] = design.noise
    written = set()
    for contrast in design.contrasts:
        if contrast.data_file in written:  # rsfmri_* share one 4D file
            continue
        written.add(contrast.data_file)
        if family_of(contrast.name) == "rsfmri":  # one biological age per component
            deltas = [true_delta(lat_row, design.seed, f"rsfmri_{k}") for k in range(25)]
            t = (row.age + np.asarray(deltas) - 63.0) / 10.0
        else:
            t = (row.age + true_delta(lat_row, design.seed, contrast.name) - 63.0) / 10.0
        rng = np.random.default_rng(derive_seed(design.seed, "noise", row.subject, contrast.name))
        values = render(contrast, anatomy(contrast.resolution), t, params, rng)
        dtype, quantum = storage(contrast.name)
        anat = anatomy(contrast.resolution)
        write_volume(
            contrast.path_for(root, row.subject),
            anat.volume(values, dtype, quantum),
            get_grid(contrast.resolution),
            dtype,
            quantum,
        )
    return len(written)


MARKER = ".agemapper-synthetic-cohort"


def claim_folder(data_directory) -> None:
    """Write only into a folder this generator made: a missing or empty one, or one it marked.

    Pointed by mistake at real subject folders, the generator would write synthetic images
    over them; it refuses instead, naming the folder.
    """
    from agemapper.errors import ConfigError

    folder = Path(data_directory)
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).exists():
        raise ConfigError(
            f"synthetic: refusing to write the synthetic cohort into {folder}: it holds files "
            f"this generator did not write (no {MARKER}); is cohort.data_directory your real data?"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("written by agemapper.synth.cohort.generate\n")


def generate(
    splits: pd.DataFrame,
    contrasts: list[Contrast],
    data_directory,
    outputs: dict,
    counts: dict,
    seed: int,
    noise: float = 1.0,
    workers: int = 1,
) -> dict:
    """Write the whole synthetic cohort.

    ``outputs`` names the files to write: ``subjects``, ``nidps`` (the main dataset, a CSV
    in the showcase layout that FUNPACK reads), ``confounds`` (the cohort's tables),
    ``latent_deltas``, ``planted`` and ``latent_variables`` (ground truth) and ``summary``
    (JSON, written last).
    """
    start = time.monotonic()
    claim_folder(data_directory)
    subjects = sample_subjects(splits, counts, seed)
    lat = latent_variables(subjects, seed)
    nidps, planted = phenotypes(subjects, lat, seed)
    confounds = pd.DataFrame(
        {
            "eid": subjects.subject,
            "site": lat.site,
            "head_size": lat.head_size.round(5),
            "motion": lat.motion.round(5),
        }
    )

    truth = []
    for (_, row), (_, lrow) in zip(subjects.iterrows(), lat.iterrows(), strict=True):
        for c in contrasts:
            truth.append(
                {
                    "subject": row.subject,
                    "contrast": c.name,
                    "family": family_of(c.name),
                    "true_delta": true_delta(lrow, seed, c.name),
                    "shared": lrow["shared"],
                    "family_delta": lrow[f"family:{family_of(c.name)}"],
                }
            )
    design = Design(seed=seed, counts=dict(counts), contrasts=tuple(contrasts), noise=noise)
    rows = [r for _, r in subjects.iterrows()]
    progress = Progress("synthetic cohort", len(rows), "subject", log=log)
    if workers > 1:
        for res in {c.resolution for c in contrasts}:  # build once, share with forked workers
            anatomy(res)
        white_noise(np.random.default_rng(0), 1)
        with ProcessPoolExecutor(
            max_workers=workers,
            initializer=_init_worker,
            initargs=(design, str(data_directory), lat),
        ) as pool:
            for i, _ in enumerate(pool.map(_write_subject, rows, chunksize=4)):
                progress.update(i + 1)
    else:
        _init_worker(design, str(data_directory), lat)
        for i, row in enumerate(rows):
            _write_subject(row)
            progress.update(i + 1)

    write_table(outputs["subjects"], subjects)
    write_main_dataset(outputs["nidps"], nidps)
    write_table(outputs["confounds"], confounds)
    write_table(outputs["latent_deltas"], pd.DataFrame(truth))
    write_table(outputs["planted"], planted)
    write_table(outputs["latent_variables"], lat)
    summary = {
        "seed": seed,
        "subjects": len(subjects),
        "counts_per_sex": dict(counts),
        "contrasts": [c.name for c in contrasts],
        "data_directory": str(data_directory),
        "noise": noise,
        "seconds": round(time.monotonic() - start, 1),
    }
    write_json(outputs["summary"], summary)
    return summary
