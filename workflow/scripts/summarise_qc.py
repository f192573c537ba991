"""Adapter: every subject left out by QC, with the stage, file and reason, in one table."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import write_table
from agemapper.qc import read_tables, with_none_line
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
i = snakemake.input
table = read_tables([i.subjects, *i.preprocess, *i.associations])
write_table(snakemake.output.summary, with_none_line(table, "all stages"))
subjects = table.subject[table.subject != ""].nunique()
line = f"QC: {subjects} subject(s) left out in {len(table)} place(s) (stage/contrast/cache)"
log.info(line)
if len(table):
    print(f"{line}; see {snakemake.output.summary}")
