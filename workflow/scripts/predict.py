"""Adapter: predict validation and test subjects with every replicate; add their mean."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import write_table
from agemapper.networks.predict import predict
from agemapper.networks.training import resolve_device
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
device = resolve_device(snakemake.config.get("runtime", {}).get("device", "auto"))
table = predict(snakemake.input.weights, snakemake.input.caches, snakemake.input.infos, device)
table.insert(0, "contrast", snakemake.wildcards.contrast)
write_table(snakemake.output.predictions, table)
