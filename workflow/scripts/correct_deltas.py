"""Adapter: bias-corrected brain-age deltas and per-contrast metrics, with a plot."""

import pandas as pd

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.deltas import correct_deltas
from agemapper.io import write_table
from agemapper.plots import predicted_vs_age
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
predictions = pd.concat(
    [
        pd.read_csv(p, sep="\t", dtype={"subject": str, "half": str}, keep_default_na=False)
        for p in snakemake.input.predictions
    ],
    ignore_index=True,
)
cfg = snakemake.params.deltas
deltas, metrics = correct_deltas(predictions, cfg["method"], cfg.get("terms", ["age", "age2"]))
write_table(snakemake.output.deltas, deltas)
write_table(snakemake.output.metrics, metrics)
predicted_vs_age(deltas, snakemake.output.plot)
log.info("metrics:\n%s", metrics.to_string(index=False))
