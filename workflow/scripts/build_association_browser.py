"""Adapter: the interactive association browser (one self-contained HTML page)."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import read_table
from agemapper.report.browser import write_browser
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
p = snakemake.params
meta = write_browser(
    read_table(snakemake.input.table, dtype={"nidp": str, "field": str}),
    snakemake.output.browser,
    p.alpha,
    p.significance,
    synthetic=p.synthetic,
    source=snakemake.input.table,
    contrasts=p.contrasts,
)
log.info("browser: %s, %.1f MB", meta["note"], meta["bytes"] / 1e6)
