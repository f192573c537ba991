"""Adapter: Manhattan plot and contrast x category heatmap of the associations."""

import pandas as pd

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.report import plots
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
table = pd.read_csv(snakemake.input.table, sep="\t")
plots.manhattan(table, snakemake.output.manhattan, snakemake.params.alpha)
plots.significance_heatmap(table, snakemake.output.heatmap)
