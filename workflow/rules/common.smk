# Glue: config validation, the contrast table, wildcard constraints and input functions.
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package sits next to the Snakefile (scripts reach it through workflow/scripts/_repo.py).
sys.path.insert(0, workflow.basedir)
try:
    from agemapper import paths
    from agemapper.images.contrasts import by_source, read_contrasts, read_table, select
    from agemapper.errors import AgeMapperError
    from agemapper.networks.settings import resolve as resolve_training
    from agemapper import planning
except ImportError as exc:
    raise WorkflowError(
        f"cannot import the agemapper package ({exc}); install the environment "
        "(environment.yml, or pip install -e .)"
    )


try:
    planning.check_required(
        config
    )  # before the schema: a message that says where to set it
except AgeMapperError as exc:
    raise WorkflowError(str(exc))
validate(config, schema="../schemas/config.schema.yaml")

try:
    validate(
        read_table(config["contrasts_table"]), schema="../schemas/contrasts.schema.yaml"
    )
    CONTRAST_TABLE = read_contrasts(config["contrasts_table"])
    CONTRASTS = [c.name for c in select(CONTRAST_TABLE, config["contrasts"])]
    resolve_training(config["training"])  # optimiser and scheduler names (their tables)
except AgeMapperError as exc:
    raise WorkflowError(str(exc))

# Contrasts by the file they read: a file that several selected contrasts read (the 4D
# resting-state file of the 25 rsfmri maps) is decoded once per subject, by one job per sex and
# cache writing all their caches (rule preprocess_{source}); every other contrast reads a file
# of its own (rule preprocess_contrast).
SHARED_SOURCES = {
    name: [c.name for c in group]
    for name, group in by_source(select(CONTRAST_TABLE, CONTRASTS)).items()
    if len(group) > 1
}
OWN_SOURCE = [c for c in CONTRASTS if not any(c in g for g in SHARED_SOURCES.values())]
SEXES = list(config["sexes"])
REPLICATES = list(range(1, config["training"]["replicates"] + 1))
COHORT = config["cohort"]
# nIDPs: a FUNPACK table as given, or the UK Biobank main dataset FUNPACK reads (extract_nidps)
NIDPS_FROM_MAIN = COHORT["nidps_format"] == "ukb_main"
# Apply mode: networks trained elsewhere (another run's, or imported from the original
# release) predict a new cohort (its "test" split, and its calibration subjects, split
# "validation", when bias corrections or ensemble weights are fitted on them).
APPLY = planning.apply_settings(config)
SYNTHETIC = None if APPLY else config.get("synthetic")
CALIBRATE = planning.CALIBRATE
# Caches, by what reads them: training reads "train" and "validation"; prediction reads
# "predict" (validation and test subjects; apply mode: the new cohort's). The validation
# subjects are preprocessed twice (about 8% more preprocessing) so that prediction shares no
# file with training: redoing predictions never makes a network look out of date.
if APPLY:
    CACHES = {"predict": ["validation", "test"] if APPLY["calibrate"] else ["test"]}
else:
    CACHES = {
        "train": ["train"],
        "validation": ["validation"],
        "predict": ["validation", "test"],
    }
SPLITS = list(CACHES)
ENSEMBLES = config.get("ensembles", {}).get("methods", [])
MODE = "apply" if APPLY else ("demo" if SYNTHETIC else "study")

# Everything planning can see is checked now, not after the trainings; and one results folder
# holds one cohort (results/run.json), so that the demo started in the study's checkout by
# mistake is refused instead of retraining over the study's networks.
try:
    planning.check_config(
        config,
        generated=[COHORT[k] for k in planning.COHORT_KEYS] if SYNTHETIC else [],
        apply=bool(APPLY),
    )
    planning.claim_results(
        paths.ROOT, planning.cohort_identity(config, MODE), write=False
    )
except AgeMapperError as exc:
    raise WorkflowError(str(exc))

# The plan says where apply mode's networks come from (read only, never trained or written)
# and what is fitted on how many calibration subjects.
if APPLY and workflow.is_main_process:
    for note in planning.apply_notes(config):
        print(note, file=sys.stderr)


onstart:
    # a run that executes jobs (not a dry run) records whose results folder this is
    planning.claim_results(
        paths.ROOT, planning.cohort_identity(config, MODE), write=True
    )


# the demo's cohort is synthetic (in apply mode too, when applied to it): pages say so
SYNTHETIC_DATA = "synthetic" in config
# contrasts as the config lists them, then the ensembles: the order of figures and pages
CONTRAST_ORDER = CONTRASTS + [f"ensemble_{m}" for m in ENSEMBLES]


wildcard_constraints:
    contrast="|".join(re.escape(c) for c in CONTRASTS),
    sex="|".join(SEXES),
    split="|".join(SPLITS),  # a cache's name (CACHES), not always a subject split
    replicate=r"\d+",


def wildcard_choice(values):
    """A wildcard constraint matching exactly ``values`` (nothing when there are none)."""
    return "|".join(re.escape(v) for v in values) or "(?!)"


def per_attempt(base, most=None):
    """A resource that grows with each retry: ``base`` times the attempt (1, 2, ...), at most
    ``most``. Sized for the full study; a profile's ``set-resources`` replaces it per site.
    """
    return lambda wildcards, attempt: min(base * attempt, most or base * attempt)


def truth_file(name):
    return f"{SYNTHETIC['truth_directory']}/{name}"


def cohort_tables():
    """The subject table (and, for the synthetic cohort, the marker that its images exist).

    Images themselves are not declared inputs: a real study has over a million of them, and
    stat-ing them would make planning take minutes. Preprocessing checks each file instead.
    """
    inputs = {"subjects": COHORT["subjects"]}
    if COHORT.get("excluded"):
        inputs["excluded"] = COHORT["excluded"]
    if SYNTHETIC:
        inputs["cohort"] = truth_file("cohort.json")
    return inputs


def listed(value):
    """A path or a list of paths, as a list."""
    return [value] if isinstance(value, str) else list(value)


def extract_inputs():
    """The main dataset's CSV files, the field list (if given) and the cohort's subjects."""
    inputs = {"main": listed(COHORT["nidps"]), "subjects": paths.CHECKED_SUBJECTS}
    if COHORT.get("nidp_fields"):
        inputs["fields"] = COHORT["nidp_fields"]
    return inputs


def nidp_inputs():
    """The nIDP table (and FUNPACK's descriptions of its columns, when there are any)."""
    if NIDPS_FROM_MAIN:
        return {"nidps": paths.NIDPS, "descriptions": paths.NIDP_DESCRIPTIONS}
    inputs = {"nidps": COHORT["nidps"]}
    if COHORT.get("nidp_descriptions"):
        inputs["descriptions"] = COHORT["nidp_descriptions"]
    return inputs


def replicate_files(kind):
    """One file per replicate network of {contrast}/{sex}."""
    build = {
        "weights": paths.weights,
        "metadata": paths.model_metadata,
        "metrics": paths.training_metrics,
    }[kind]
    return [build(replicate=r) for r in REPLICATES]


def initial_networks():
    """The networks fine-tuning starts from (training.initial_weights), one per replicate."""
    pattern = config["training"].get("initial_weights")
    return expand(pattern, replicate=REPLICATES, allow_missing=True) if pattern else []


def intensity_reference(wildcards, contrasts=None):
    """The training split's manifests, the reference for validation and test intensities, of
    ``{contrast}`` or of ``contrasts`` (the contrasts of one source file)."""
    if wildcards.split == "train" or APPLY:
        return []  # the training split is its own reference
    return [
        paths.manifest(contrast=c, sex=wildcards.sex, split="train")
        for c in contrasts or [wildcards.contrast]
    ]


def reference_networks(wildcards, contrasts=None):
    """Apply mode: the networks whose stored training-input statistics are the reference,
    one list for ``{contrast}`` or for each of ``contrasts`` (of one source file)."""
    if not APPLY:
        return []
    return [
        [paths.network(c, wildcards.sex, r, APPLY["networks"]) for r in REPLICATES]
        for c in contrasts or [wildcards.contrast]
    ]


def network_weights():
    """The networks that predict: trained here, or (apply mode) from a networks folder."""
    if APPLY:
        return [
            paths.network(replicate=r, networks=APPLY["networks"]) for r in REPLICATES
        ]
    return [paths.weights(replicate=r) for r in REPLICATES]


def reused(name):
    """Apply mode: a table to reuse (corrections, ensemble_weights), or None to fit one."""
    if APPLY and APPLY[name] != CALIBRATE:
        return APPLY[name]
    return None


def all_predictions():
    return expand(paths.predictions(), contrast=CONTRASTS, sex=SEXES)


def delta_inputs():
    inputs = {"predictions": all_predictions()}
    if ENSEMBLES:
        inputs["ensembles"] = paths.ENSEMBLE_PREDICTIONS
    if reused("corrections"):
        inputs["corrections"] = reused("corrections")
    if APPLY:
        # the new cohort's scale factors come with its deltas: for networks without
        # statistics of their training inputs, the only check of the cohort's scale
        inputs["scale_factors"] = paths.scale_factors()
    return inputs


def all_targets():
    """Every result, and every page and figure of the report."""
    pages = ["metrics", "uncertainty", "qc"] + (["weights"] if ENSEMBLES else [])
    targets = [paths.DELTAS, paths.QC_SUMMARY, paths.PLOT_MAE, paths.PLOT_UNCERTAINTY]
    if not APPLY:
        pages += ["significant", "associations", "dropped", "scale_factors"]
        targets += [
            paths.SIGNIFICANT,
            paths.scale_factors(),
            paths.PLOT_MANHATTAN,
            paths.BROWSER,
            *expand(paths.training_plot(), contrast=CONTRASTS, sex=SEXES),
        ]
    if SYNTHETIC:
        targets.append(paths.EVALUATION_PAGE)
    return targets + [paths.report_page(name) for name in pages]
