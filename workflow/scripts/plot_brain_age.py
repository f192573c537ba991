"""Adapter: predicted vs age, delta vs age (before/after correction), MAE per contrast."""

import pandas as pd

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.report import plots
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
deltas = pd.read_csv(snakemake.input.deltas, dtype={"subject": str})
plots.predicted_vs_age(deltas, snakemake.output.predicted)
plots.delta_vs_age(deltas, snakemake.output.deltas, contrasts=snakemake.params.contrasts)
plots.mae_bars(pd.read_csv(snakemake.input.metrics, sep="\t"), snakemake.output.mae)
