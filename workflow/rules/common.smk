# Glue: config validation, the contrast table, wildcard constraints and input functions.
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package sits next to the Snakefile (scripts reach it through workflow/scripts/_repo.py).
sys.path.insert(0, workflow.basedir)
try:
    from agemapper import paths
    from agemapper.images.contrasts import read_contrasts, select
    from agemapper.errors import AgeMapperError
    from agemapper.networks.settings import resolve as resolve_training
except ImportError as exc:
    raise WorkflowError(
        f"cannot import the agemapper package ({exc}); install the environment "
        "(environment.yml, or pip install -e .)"
    )


validate(config, schema="../schemas/config.schema.yaml")

try:
    CONTRAST_TABLE = read_contrasts(config["contrasts_table"])
    CONTRASTS = [c.name for c in select(CONTRAST_TABLE, config["contrasts"])]
    resolve_training(config["training"])  # optimiser and scheduler names (their tables)
except AgeMapperError as exc:
    raise WorkflowError(str(exc))

SEXES = list(config["sexes"])
REPLICATES = list(range(1, config["training"]["replicates"] + 1))
COHORT = config["cohort"]
# Apply mode: trained networks of another run predict a new cohort (its "test" split).
APPLY = config.get("apply")
SYNTHETIC = None if APPLY else config.get("synthetic")
SPLITS = ["test"] if APPLY else ["train", "validation", "test"]
PREDICT_SPLITS = ["test"] if APPLY else ["validation", "test"]
ENSEMBLES = config.get("ensembles", {}).get("methods", [])


wildcard_constraints:
    contrast="|".join(re.escape(c) for c in CONTRASTS),
    sex="|".join(SEXES),
    split="|".join(SPLITS),
    replicate=r"\d+",


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


def network_weights():
    """The networks that predict: trained here, or another run's in apply mode."""
    root = APPLY["results"] if APPLY else paths.ROOT
    return [paths.weights(replicate=r, root=root) for r in REPLICATES]


def all_predictions():
    return expand(paths.predictions(), contrast=CONTRASTS, sex=SEXES)


def delta_inputs():
    inputs = {"predictions": all_predictions()}
    if ENSEMBLES:
        inputs["ensembles"] = paths.ENSEMBLE_PREDICTIONS
    if APPLY:
        inputs["corrections"] = paths.corrections(APPLY["results"])
    return inputs


def all_targets():
    targets = [paths.DELTAS, paths.QC_SUMMARY, paths.PLOT_MAE]
    if APPLY:
        return targets
    targets += [
        paths.SIGNIFICANT,
        paths.scale_factors(),
        paths.PLOT_MANHATTAN,
        *expand(paths.training_plot(), contrast=CONTRASTS, sex=SEXES),
    ]
    if SYNTHETIC:
        targets.append(paths.EVALUATION)
    return targets
