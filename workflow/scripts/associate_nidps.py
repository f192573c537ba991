"""Adapter: associations of corrected deltas with nIDPs (all tests, and the significant ones)."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.runner import log_to
from agemapper.stats.associations import run_associations

log = log_to(snakemake.log[0])
run_associations(
    snakemake.input.deltas,
    snakemake.input.nidps,
    snakemake.input.confounds,
    snakemake.params.associations,
    snakemake.output.all,
    snakemake.output.significant,
    snakemake.output.dropped,
    qc=snakemake.params.qc,
    out_qc=snakemake.output.qc,
    descriptions=snakemake.input.get("descriptions"),
)
