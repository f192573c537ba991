"""Adapter: training curves of the replicate networks of one contrast and sex."""

import pandas as pd

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.report import plots
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
w = snakemake.wildcards
histories = {
    f"replicate {i}": pd.read_csv(path, sep="\t")
    for i, path in enumerate(snakemake.input.metrics, start=1)
}
plots.training_curves(histories, snakemake.output.plot, f"{w.contrast}, {w.sex}")
