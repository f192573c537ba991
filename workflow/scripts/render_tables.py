"""Adapter: the tables of the report as HTML pages (one per output, named as its input)."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import read_table
from agemapper.report.pages import write_named_page
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
for name, path in snakemake.output.items():
    source = snakemake.input[name]
    write_named_page(path, name, read_table(source), source, synthetic=snakemake.params.synthetic)
    log.info("%s -> %s", source, path)
