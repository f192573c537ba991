"""Adapter: validate the subject table once; later stages read the checked copy."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.images.subjects import check, read_excluded
from agemapper.io import write_table
from agemapper.qc import with_none_line
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
i = snakemake.input
excluded = read_excluded(i.excluded) if "excluded" in i.keys() else None
table, problems = check(i.subjects, excluded, snakemake.params.qc)
write_table(snakemake.output.subjects, table)
write_table(snakemake.output.problems, with_none_line(problems, "subjects"))
log.info("%d subjects checked; %d rows left out by QC", len(table), len(problems))
