"""Checks a run's config can pass before any job starts: the errors planning can give.

A study runs for days; a typo in a confound name, a missing data folder or a subject table
without test halves should stop it at planning with a one-line message naming the key, not
after 114 trainings. :func:`check_config` reads only small things (paths, one table header,
the subject table) and raises :class:`~agemapper.errors.ConfigError`.

:func:`claim_results` keeps one results folder to one cohort: a run whose cohort differs from
the one recorded in ``results/run.json`` (e.g. the demo started by mistake in the study's
checkout, which would retrain over the study's networks) is refused before it writes anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agemapper import paths
from agemapper.errors import AgeMapperError, ConfigError
from agemapper.io import write_json

# cohort keys a run needs, and where the message tells the user to set them
COHORT_KEYS = ("subjects", "data_directory", "nidps", "confounds")
# every cohort key that names an input (none may lie where the workflow writes)
INPUT_KEYS = (*COHORT_KEYS, "excluded", "nidp_fields", "nidp_descriptions")
# apply mode: fit bias corrections / ensemble weights on the cohort's calibration subjects
CALIBRATE = "calibrate"
CALIBRATION_SPLIT = "validation"
MIN_CALIBRATION = 100  # fewer calibration subjects (per sex) than this: a warning


def apply_settings(config: dict) -> dict | None:
    """Apply mode's sources, resolved (``None`` outside apply mode).

    ``networks``: a networks folder (``apply.networks``, else ``{apply.results}/models``);
    ``corrections`` / ``ensemble_weights``: a table to reuse, or ``calibrate`` (fit them on
    the cohort's calibration subjects, its split ``validation``). Defaults: another run's
    tables when ``apply.results`` is given, else ``calibrate``. ``calibrate``: whether
    anything is fitted (the calibration subjects are then predicted too).
    """
    apply = config.get("apply")
    if not apply:
        return None
    results = apply.get("results")
    ensembles = bool(config.get("ensembles", {}).get("methods"))
    settings = {
        "networks": apply.get("networks") or (f"{results}/models" if results else None),
        "corrections": apply.get("corrections")
        or (paths.corrections(results) if results else CALIBRATE),
        "ensemble_weights": apply.get("ensemble_weights")
        or (paths.ensemble_weights(results) if results else CALIBRATE),
    }
    settings["calibrate"] = settings["corrections"] == CALIBRATE or (
        ensembles and settings["ensemble_weights"] == CALIBRATE
    )
    return settings


def _where(config: dict) -> str:
    return "config/site.yaml" if not config.get("synthetic") else "the config"


def check_required(config: dict) -> None:
    """The cohort keys are present (before schema validation, for a message that says where)."""
    cohort = config.get("cohort")
    if not isinstance(cohort, dict):
        raise ConfigError(
            "config: cohort is missing: set cohort.data_directory, cohort.nidps and "
            "cohort.confounds (for the study, in config/site.yaml, read after config/ukb.yaml)"
        )
    missing = [k for k in COHORT_KEYS if not cohort.get(k)]
    if missing:
        keys = ", ".join(f"cohort.{k}" for k in missing)
        raise ConfigError(
            f"config: {keys} {'is' if len(missing) == 1 else 'are'} missing: set "
            f"{'it' if len(missing) == 1 else 'them'} in {_where(config)} (for the study, "
            "config/site.yaml, given after config/ukb.yaml)"
        )


def listed(value) -> list:
    """A config path, or a list of them (cohort.nidps may list the main dataset's CSVs)."""
    if value is None:
        return []
    return [value] if isinstance(value, str | os.PathLike) else list(value)


def _inside(path, folder) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def check_inputs_apart(config: dict, results="results") -> None:
    """No job may write into, or delete, the cohort's inputs.

    Every output is under ``results/``. In a real-data run no input may lie there (Snakemake
    removes temporary and rerun outputs) and ``results/`` may not lie inside the data folder.
    In the demo the generator's outputs are the cohort, so they must all be under ``results/``:
    a demo config pointed at real tables would have Snakemake delete them before generating.
    """
    cohort = config["cohort"]
    keys = [k for k in INPUT_KEYS if cohort.get(k)]
    apply = apply_settings(config)
    if apply and _inside(apply["networks"], results):
        key = "apply.networks" if config["apply"].get("networks") else "apply.results"
        raise ConfigError(
            f"config: {key} puts the networks ({apply['networks']}) inside {results}/, where "
            "the workflow trains and writes networks; keep networks trained elsewhere (or "
            "imported with agemapper import-original) outside it, e.g. in networks/"
        )
    if config.get("synthetic") and not config.get("apply"):
        generated = [k for k in keys if k in COHORT_KEYS]
        for key in generated + ["truth_directory"]:
            section = "synthetic" if key == "truth_directory" else "cohort"
            value = config["synthetic"][key] if key == "truth_directory" else cohort[key]
            for path in listed(value):
                if not _inside(path, results):
                    raise ConfigError(
                        f"config: {section}.{key} {path} is written by the synthetic-cohort "
                        f"generator but lies outside {results}/: a real file there would be "
                        "deleted and overwritten. Real data runs without a synthetic: block "
                        "(config/ukb.yaml)."
                    )
        keys = [k for k in keys if k not in COHORT_KEYS and k != "excluded"]
    for key in keys:
        for path in listed(cohort[key]):
            if _inside(path, results):
                raise ConfigError(
                    f"config: cohort.{key} {path} lies inside {results}/, where the workflow "
                    "writes (and removes) its own files; keep the cohort's inputs elsewhere"
                )
    if config.get("synthetic") and not config.get("apply"):
        return
    if _inside(results, cohort["data_directory"]):
        raise ConfigError(
            f"config: cohort.data_directory {cohort['data_directory']} contains {results}/, where "
            "the workflow writes: no job may write into the cohort's data; run from elsewhere"
        )


def check_config(config: dict, generated=(), apply: bool = False, results="results") -> None:
    """Every config problem planning can see, as one ``ConfigError`` naming the key.

    ``generated``: paths a job of this run creates (the demo's synthetic tables), not checked.
    ``apply``: apply mode, where the nIDP and confound tables are only needed for associations.
    """
    generated = {os.path.normpath(str(p)) for p in generated}
    cohort = config["cohort"]
    check_inputs_apart(config, results)

    def must_exist(key: str, path, kind: str = "file") -> bool:
        if path is None or os.path.normpath(str(path)) in generated:
            return False
        p = Path(path)
        ok = p.is_dir() if kind == "folder" else p.exists()
        if not ok:
            what = "is not a folder" if p.exists() else "does not exist"
            raise ConfigError(f"config: {key} {path} {what} (set it in {_where(config)})")
        return True

    must_exist("contrasts_table", config["contrasts_table"])
    subjects_there = must_exist("cohort.subjects", cohort["subjects"])
    if cohort.get("excluded"):
        must_exist("cohort.excluded", cohort["excluded"])
    must_exist("cohort.data_directory", cohort["data_directory"], kind="folder")
    if apply:
        _check_apply(config, must_exist, subjects_there)
        return
    check_no_imported_networks(results)
    _check_nidps(config, must_exist)
    if must_exist("cohort.confounds", cohort["confounds"]):
        _check_confounds(config)
    if subjects_there:
        _check_subjects(config)


def _check_nidps(config: dict, must_exist) -> None:
    """The nIDP inputs: a FUNPACK table, or the main dataset's CSVs and the field list.

    For the main dataset, each CSV's header (one line) must be the showcase layout and the
    field list must name fields, at least one of them in it (``agemapper.stats.extraction``).
    """
    from agemapper.stats.extraction import main_dataset_fields, read_field_list

    cohort = config["cohort"]
    raw = cohort.get("nidps_format", "funpack") == "ukb_main"
    given = listed(cohort["nidps"])
    if not raw and len(given) != 1:
        raise ConfigError(
            "config: cohort.nidps lists several files, which only the main dataset may be: "
            "set cohort.nidps_format: ukb_main for UK Biobank main-dataset CSVs, or give one "
            "FUNPACK table"
        )
    wrong = "nidp_descriptions" if raw else "nidp_fields"
    if cohort.get(wrong):
        raise ConfigError(
            f"config: cohort.{wrong} is for cohort.nidps_format "
            f"{'funpack' if raw else 'ukb_main'}, but cohort.nidps_format is "
            f"{'ukb_main' if raw else 'funpack'} (config/README.md)"
        )
    fields = cohort.get("nidp_fields")
    if fields and must_exist("cohort.nidp_fields", fields):
        try:
            fields = read_field_list(fields)
        except AgeMapperError as exc:
            raise ConfigError(f"config: cohort.nidp_fields: {exc}") from exc
    else:
        fields = None
    if cohort.get("nidp_descriptions"):
        must_exist("cohort.nidp_descriptions", cohort["nidp_descriptions"])
    present: set[int] = set()
    checked = False
    for path in given:
        if must_exist("cohort.nidps", path) and raw:
            try:
                present |= main_dataset_fields(path)
            except AgeMapperError as exc:
                raise ConfigError(
                    f"config: cohort.nidps (cohort.nidps_format: ukb_main): {exc}"
                ) from exc
            checked = True
    if checked and fields and not present & set(fields):
        raise ConfigError(
            f"config: none of the fields of cohort.nidp_fields {cohort['nidp_fields']} is a "
            f"column of the main dataset cohort.nidps {', '.join(map(str, given))}"
        )


def check_no_imported_networks(results="results") -> None:
    """A training run never trains over imported networks: refuse when ``results/models``
    holds any (``manifest.json`` of ``agemapper import-original`` beside them)."""
    models = Path(results) / "models"
    found = sorted(models.glob(f"*/*/replicate-*/{paths.IMPORT_MANIFEST}"))
    if found:
        where = found[0].parent
        raise ConfigError(
            f"{where} holds a network imported by agemapper import-original "
            f"({paths.IMPORT_MANIFEST}; {len(found)} such under {models}/): this run trains "
            "networks there and would replace it. Imported networks are never retrained: move "
            f"them out of {results}/ (mv {models} networks) and predict with them in apply mode "
            "(apply.networks: networks, config/pretrained.yaml)"
        )


def _check_apply(config: dict, must_exist, subjects_there: bool) -> None:
    """Apply mode: the networks, the tables to reuse, the calibration subjects."""
    apply = apply_settings(config)
    key = "apply.networks" if config["apply"].get("networks") else "apply.results"
    if config["apply"].get("results"):
        must_exist("apply.results", config["apply"]["results"], kind="folder")
    must_exist(key, apply["networks"], kind="folder")
    for name in ("corrections", "ensemble_weights"):
        if apply[name] != CALIBRATE and (name == "corrections" or _ensembles(config)):
            must_exist(f"apply.{name}", apply[name])
    replicates = range(1, config["training"]["replicates"] + 1)
    missing = [
        paths.network(c, s, r, apply["networks"])
        for c in config["contrasts"]
        for s in config["sexes"]
        for r in replicates
        if not Path(paths.network(c, s, r, apply["networks"])).is_file()
    ]
    if missing:
        raise ConfigError(
            f"config: {key}: {len(missing)} of the networks this run needs are missing (first: "
            f"{missing[0]}); import them (agemapper import-original RELEASE_FOLDER "
            f"{apply['networks']}), or set contrasts, sexes and training.replicates to the "
            "networks you have"
        )
    if not subjects_there:
        return
    from agemapper.images.subjects import read_subjects

    try:
        subjects = read_subjects(config["cohort"]["subjects"], qc="skip")
    except AgeMapperError as exc:
        raise ConfigError(f"config: cohort.subjects: {exc}") from exc
    splits = ["test"] + ([CALIBRATION_SPLIT] if apply["calibrate"] else [])
    for sex in config["sexes"]:
        for split in splits:
            if not ((subjects.sex == sex) & (subjects.split == split)).any():
                raise ConfigError(
                    f"config: cohort.subjects {config['cohort']['subjects']} has no {sex} "
                    f"{split} subjects: apply mode predicts split test"
                    + (
                        f" and fits bias corrections and ensemble weights on the calibration "
                        f"subjects, split {CALIBRATION_SPLIT} (with their ages); or reuse a "
                        "run's tables (apply.corrections, apply.ensemble_weights)"
                        if split == CALIBRATION_SPLIT
                        else ""
                    )
                )


def _ensembles(config: dict) -> bool:
    return bool(config.get("ensembles", {}).get("methods"))


def apply_notes(config: dict) -> list[str]:
    """What apply mode will do, for the plan: the networks and what they carry, what is
    fitted on how many calibration subjects (a warning under ``MIN_CALIBRATION``)."""
    from agemapper.images.subjects import read_subjects
    from agemapper.networks import pretrained

    apply = apply_settings(config)
    replicates = range(1, config["training"]["replicates"] + 1)
    notes = [
        pretrained.describe(apply["networks"], config["contrasts"], config["sexes"], replicates)
    ]
    fitted = [n for n in ("corrections", "ensemble_weights") if apply[n] == CALIBRATE]
    fitted = [n for n in fitted if n == "corrections" or _ensembles(config)]
    reused = [
        f"{n} from {apply[n]}"
        for n in ("corrections", "ensemble_weights")
        if apply[n] != CALIBRATE and (n == "corrections" or _ensembles(config))
    ]
    if reused:
        notes.append("apply mode reuses " + " and ".join(reused) + ".")
    if fitted:
        subjects = read_subjects(config["cohort"]["subjects"], qc="skip")
        counts = {
            sex: int(((subjects.sex == sex) & (subjects.split == CALIBRATION_SPLIT)).sum())
            for sex in config["sexes"]
        }
        what = " and ".join(n.replace("_", " ") for n in fitted)
        notes.append(
            f"apply mode fits the {what} on the cohort's calibration subjects (split "
            f"{CALIBRATION_SPLIT}): " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."
        )
        few = [s for s, n in counts.items() if n < MIN_CALIBRATION]
        if few:
            notes.append(
                f"WARNING: fewer than {MIN_CALIBRATION} calibration subjects ({', '.join(few)}):"
                " the bias correction and ensemble weights will be uncertain; add calibration "
                "subjects or reuse a larger run's corrections.tsv / weights.tsv."
            )
    return notes


def _check_confounds(config: dict) -> None:
    path = Path(config["cohort"]["confounds"])
    assoc = config["associations"]
    sep = "," if path.suffix == ".csv" else "\t"
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = [c.strip() for c in fh.readline().rstrip("\r\n").split(sep)]
    if not {"eid", "subject"} & set(header):
        raise ConfigError(
            f"config: cohort.confounds {path} has no subject id column ('eid' or 'subject'); "
            f"its header starts {header[:5]}"
        )
    for key in ("confounds", "categorical_confounds"):
        absent = [c for c in assoc.get(key, []) if c not in header]
        if absent:
            raise ConfigError(
                f"config: associations.{key} names {absent}, not columns of cohort.confounds "
                f"{path} (its columns: {', '.join(header)})"
            )
    not_listed = [c for c in assoc.get("categorical_confounds", []) if c not in assoc["confounds"]]
    if not_listed:
        raise ConfigError(
            f"config: associations.categorical_confounds {not_listed} must also be listed "
            "in associations.confounds"
        )


def _check_subjects(config: dict) -> None:
    """Every sex and split the run needs has subjects; test halves exist for replication."""
    from agemapper.images.subjects import read_subjects

    try:
        subjects = read_subjects(config["cohort"]["subjects"], qc="skip")
    except AgeMapperError as exc:
        raise ConfigError(f"config: cohort.subjects: {exc}") from exc
    for sex in config["sexes"]:
        for split in ("train", "validation", "test"):
            if not ((subjects.sex == sex) & (subjects.split == split)).any():
                raise ConfigError(
                    f"config: cohort.subjects {config['cohort']['subjects']} has no {sex} {split} "
                    f"subjects (an empty {sex}_{split}.txt?); every sex in `sexes` needs all three "
                    "splits"
                )
    if not config["associations"].get("replication", True):
        return
    test = subjects[subjects.split == "test"]
    halves = set(test.half) - {""}
    if not {"A", "B"} <= halves:
        raise ConfigError(
            f"config: associations.replication is true, but the test subjects of cohort.subjects "
            f"{config['cohort']['subjects']} have no halves A and B (discovery and replication); "
            "give the halves (column 'half', or the release's testA/testB files) or set "
            "associations.replication: false"
        )


def cohort_identity(config: dict, mode: str) -> dict:
    """What makes two runs the same cohort: the images and the subject list, by absolute path."""
    cohort = config["cohort"]
    return {
        "mode": mode,
        "data_directory": _stable(cohort["data_directory"]),
        "subjects": _stable(cohort["subjects"]),
    }


def _stable(path) -> str:
    """Relative to the working directory when inside it (a moved checkout stays the same run)."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full)
    return full if rel.startswith("..") else rel


def claim_results(results, identity: dict, write: bool) -> None:
    """Refuse to mix cohorts in one results folder; record this run's cohort when ``write``.

    ``results/run.json`` holds the cohort of the run that wrote the folder. A run for another
    cohort (another mode, data folder or subject table) raises ``ConfigError``: it would train,
    predict and correct over the recorded run's outputs.
    """
    stamp = Path(results) / "run.json"
    if stamp.exists():
        try:
            recorded = json.loads(stamp.read_text())
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict) and recorded.get("cohort") != identity:
            was = recorded.get("cohort") or {}
            raise ConfigError(
                f"{results}/ holds the {was.get('mode', '?')} run of cohort "
                f"{was.get('data_directory', '?')} (subjects {was.get('subjects', '?')}); this "
                f"is a {identity['mode']} run of {identity['data_directory']} (subjects "
                f"{identity['subjects']}). Refusing to mix them: run from another clone or move "
                f"{results}/ away (or, if it is the same data at a new path, delete {stamp})."
                + (
                    " For the study, give its configs: --profile slurm, or --configfile "
                    "config/ukb.yaml config/site.yaml."
                    if identity["mode"] == "demo"
                    else ""
                )
            )
        if isinstance(recorded, dict):
            return
    if write:
        write_json(stamp, {"cohort": identity})
