"""Every file name of the workflow, built from entities in one place.

Functions return concrete paths when given values and Snakemake patterns when left at their
defaults (``{contrast}``, ``{sex}``, ``{split}``, ``{replicate}``), so rules and code agree.
"""

from __future__ import annotations

ROOT = "results"
C, S, P, R = "{contrast}", "{sex}", "{split}", "{replicate}"


def cache(contrast=C, sex=S, split=P) -> str:
    return f"{ROOT}/cache/{contrast}/{sex}_{split}.cache"


def manifest(contrast=C, sex=S, split=P) -> str:
    return f"{ROOT}/cache/{contrast}/{sex}_{split}.tsv"


def cache_info(contrast=C, sex=S, split=P) -> str:
    return f"{ROOT}/cache/{contrast}/{sex}_{split}.json"


def model_dir(contrast=C, sex=S, replicate=R, root=ROOT) -> str:
    return network_dir(contrast, sex, replicate, f"{root}/models")


def weights(contrast=C, sex=S, replicate=R, root=ROOT) -> str:
    """``root`` is another run's results folder in apply mode."""
    return f"{model_dir(contrast, sex, replicate, root)}/model.safetensors"


def network_dir(contrast=C, sex=S, replicate=R, networks=f"{ROOT}/models") -> str:
    """One network's folder in a networks folder: a run's ``results/models``, or the folder
    ``agemapper import-original`` writes (the same layout)."""
    return f"{networks}/{contrast}/{sex}/replicate-{replicate}"


def network(contrast=C, sex=S, replicate=R, networks=f"{ROOT}/models") -> str:
    return f"{network_dir(contrast, sex, replicate, networks)}/model.safetensors"


# Beside an imported network: where it came from (source file, sha256, contrast, sex, ...).
IMPORT_MANIFEST = "manifest.json"


def import_manifest(contrast=C, sex=S, replicate=R, networks=f"{ROOT}/models") -> str:
    return f"{network_dir(contrast, sex, replicate, networks)}/{IMPORT_MANIFEST}"


def model_metadata(contrast=C, sex=S, replicate=R) -> str:
    return f"{model_dir(contrast, sex, replicate)}/metadata.json"


def training_metrics(contrast=C, sex=S, replicate=R) -> str:
    return f"{model_dir(contrast, sex, replicate)}/metrics.tsv"


def checkpoint(contrast=C, sex=S) -> str:
    """Resumable training state; deliberately not a Snakemake output, so it survives failures."""
    return f"{ROOT}/checkpoints/{contrast}/{sex}/checkpoint.safetensors"


def preprocess_checkpoint(contrast=C, sex=S, split=P) -> str:
    """A cache being written, with its journal beside it: a stopped job's rerun resumes it."""
    return f"{ROOT}/checkpoints/{contrast}/{sex}/preprocess_{split}.cache"


def predictions(contrast=C, sex=S) -> str:
    return f"{ROOT}/predictions/{contrast}/{sex}.tsv"


def scale_factors() -> str:
    return f"{ROOT}/qc/scale_factors.tsv"


def preprocess_qc(contrast=C, sex=S, split=P) -> str:
    """Subjects a preprocessing job left out under ``qc: skip`` (empty when none)."""
    return f"{ROOT}/qc/preprocess/{contrast}/{sex}_{split}.tsv"


CHECKED_SUBJECTS = f"{ROOT}/qc/subjects.tsv"
SUBJECT_PROBLEMS = f"{ROOT}/qc/subject_problems.tsv"
ASSOCIATION_QC = f"{ROOT}/qc/associations.tsv"
QC_SUMMARY = f"{ROOT}/qc/skipped.tsv"


def training_plot(contrast=C, sex=S) -> str:
    return f"{ROOT}/plots/training/{contrast}_{sex}.png"


def corrections(root=ROOT) -> str:
    return f"{root}/deltas/corrections.tsv"


def ensemble_weights(root=ROOT) -> str:
    return f"{root}/ensembles/weights.tsv"


ENSEMBLE_PREDICTIONS = f"{ROOT}/ensembles/predictions.tsv"
PLOT_DELTA_VS_AGE = f"{ROOT}/plots/delta_vs_age.png"
PLOT_MAE = f"{ROOT}/plots/mae.png"
PLOT_MANHATTAN = f"{ROOT}/plots/manhattan.png"
PLOT_HEATMAP = f"{ROOT}/plots/significance_heatmap.png"
DELTAS = f"{ROOT}/deltas/all.csv"
DELTA_METRICS = f"{ROOT}/deltas/metrics.tsv"
DELTA_PLOT = f"{ROOT}/plots/predicted_vs_age.png"
NIDPS = f"{ROOT}/nidps/nidps.tsv"  # FUNPACK's table, when the cohort gives the main dataset
NIDP_DESCRIPTIONS = f"{ROOT}/nidps/descriptions.tsv"
ASSOCIATIONS = f"{ROOT}/associations/all.tsv"
SIGNIFICANT = f"{ROOT}/associations/significant.tsv"
DROPPED_NIDPS = f"{ROOT}/associations/dropped_nidps.tsv"
EVALUATION = f"{ROOT}/evaluation/synthetic_truth.txt"
EVALUATION_TABLE = f"{ROOT}/evaluation/synthetic_truth.tsv"
EVALUATION_PAGE = f"{ROOT}/evaluation/synthetic_truth.html"
BROWSER = f"{ROOT}/associations/browser.html"
UNCERTAINTY = f"{ROOT}/deltas/uncertainty.tsv"
PLOT_UNCERTAINTY = f"{ROOT}/plots/uncertainty.png"


def report_page(name: str) -> str:
    """A table of the report as an HTML page (``agemapper.report.pages.TABLE_PAGES``)."""
    return f"{ROOT}/report/{name}.html"


def log(rule: str, *entities) -> str:
    name = "_".join(str(e) for e in entities) or rule
    return f"{ROOT}/logs/{rule}/{name}.log"


def benchmark(rule: str, *entities) -> str:
    name = "_".join(str(e) for e in entities) or rule
    return f"{ROOT}/benchmarks/{rule}/{name}.tsv"
