"""Adapter: the nIDP table from the UK Biobank main dataset, by FUNPACK (-cfg fmrib)."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.runner import log_to
from agemapper.stats.extraction import extract_nidps

log = log_to(snakemake.log[0])
i = snakemake.input
extract_nidps(
    list(i.main),
    snakemake.output.nidps,
    snakemake.output.descriptions,
    subjects=i.subjects,
    fields=i.fields if "fields" in i.keys() else None,
    instances=snakemake.params.instances,
    threads=snakemake.threads,
)
