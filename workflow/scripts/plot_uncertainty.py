"""Adapter: calibration of the replicate spread (per-subject uncertainty) against the error."""

import pandas as pd

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import READABLE_DIGITS, write_table
from agemapper.report import plots
from agemapper.report.uncertainty import calibration
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
table, bins = calibration(pd.read_csv(snakemake.input.deltas, dtype={"subject": str}))
write_table(snakemake.output.table, table, digits=READABLE_DIGITS)
plots.uncertainty_calibration(table, bins, snakemake.output.plot)
log.info("replicate spread vs |corrected delta|:\n%s", table.to_string(index=False))
