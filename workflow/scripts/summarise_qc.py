"""Adapter: every subject left out by QC, with the stage, file and reason, in one table."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import write_table
from agemapper.qc import read_tables, with_none_line
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
i = snakemake.input
table = read_tables([i.subjects, *i.preprocess, *i.associations])
write_table(snakemake.output.summary, with_none_line(table, "all stages"))
log.info("QC: %d subject/contrast entries left out", len(table))
if len(table):
    print(f"QC: {len(table)} subject/contrast entries left out; see {snakemake.output.summary}")
