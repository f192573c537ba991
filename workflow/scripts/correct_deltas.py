"""Adapter: bias-corrected brain-age deltas and per-contrast metrics."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import READABLE_DIGITS, read_table, write_table
from agemapper.runner import log_to
from agemapper.stats.deltas import correct_deltas, read_corrections
from agemapper.stats.ensembles import read_predictions

log = log_to(snakemake.log[0])
i, cfg = snakemake.input, snakemake.params.deltas
ensembles = [i.ensembles] if "ensembles" in i.keys() else []
stored = read_corrections(read_table(i.corrections)) if "corrections" in i.keys() else None
deltas, metrics, used = correct_deltas(
    read_predictions([*i.predictions, *ensembles], may_be_empty=ensembles),
    cfg["method"],
    cfg.get("terms", ["age", "age2"]),
    stored=stored,
    warn_under=snakemake.params.warn_under,
)
write_table(snakemake.output.deltas, deltas)  # full precision: later stages read it
correlations = [c for c in metrics.columns if c.startswith("r_")]  # 1e-16 is 0 for a reader
write_table(
    snakemake.output.metrics, metrics.round(dict.fromkeys(correlations, 4)), digits=READABLE_DIGITS
)
write_table(snakemake.output.corrections, used)  # reused in apply mode: full precision
log.info("metrics:\n%s", metrics.to_string(index=False))
