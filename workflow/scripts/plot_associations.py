"""Adapter: Manhattan plot and contrast x category heatmap of the associations."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import read_table
from agemapper.report import plots
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
p = snakemake.params
table = read_table(snakemake.input.table, dtype={"nidp": str, "field": str})
plots.manhattan(table, snakemake.output.manhattan, p.alpha, p.significance, contrasts=p.contrasts)
plots.significance_heatmap(
    table, snakemake.output.heatmap, p.significance, p.alpha, contrasts=p.contrasts
)
