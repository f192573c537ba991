"""Adapter: fit (or reuse another run's) ensembles of contrasts and predict with them."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import read_table, write_table
from agemapper.runner import log_to
from agemapper.stats import ensembles

log = log_to(snakemake.log[0])
cfg = snakemake.params.ensembles
predictions = ensembles.read_predictions(snakemake.input.predictions)
if "weights" in snakemake.input.keys():  # apply mode: another run's ensembles
    fitted = ensembles.from_weights_table(read_table(snakemake.input.weights))
else:
    fitted = ensembles.fit_all(
        predictions,
        cfg.get("methods", []),
        cfg.get("nonnegative", False),
        cfg.get("l1_ratio", 0.5),
        cfg.get("folds", 5),
        seed=snakemake.params.seed,
        warn_under=snakemake.params.warn_under,
    )
write_table(snakemake.output.predictions, ensembles.apply(fitted, predictions))
write_table(snakemake.output.weights, ensembles.weights_table(fitted))
log.info("ensemble weights:\n%s", ensembles.weights_table(fitted).to_string(index=False))
