"""Adapter: train the replicate networks of one contrast and sex."""

import json

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.networks.pretrained import training_contract
from agemapper.networks.training import train_replicates
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
w, out = snakemake.wildcards, snakemake.output
with open(snakemake.input.info) as fh:  # the training cache's sidecar
    contract = training_contract(json.load(fh))  # + its intensity summary, grid, affine
train_replicates(
    snakemake.input.train,
    snakemake.input.validation,
    snakemake.params.model,
    snakemake.params.training,
    contract,
    (w.contrast, w.sex),
    out.weights,
    out.metadata,
    out.metrics,
    snakemake.params.checkpoint,
    runtime={**snakemake.config.get("runtime", {}), "threads": snakemake.threads},
    initial_weights=list(snakemake.input.initial) or None,
)
