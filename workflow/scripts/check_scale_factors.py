"""Adapter: scale factors recomputed from the training split, beside the table's."""

from pathlib import Path

import pandas as pd

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.images.contrasts import read_contrasts
from agemapper.images.preprocess import estimate_scale_factors
from agemapper.io import READABLE_DIGITS, write_table
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
manifests = {}
for path in snakemake.input.manifests:  # results/cache/{contrast}/{sex}_train.tsv
    contrast = Path(path).parent.name
    frame = pd.read_csv(path, sep="\t")
    manifests[contrast] = pd.concat([manifests.get(contrast), frame], ignore_index=True)
table = estimate_scale_factors(manifests, read_contrasts(snakemake.input.contrasts))
write_table(snakemake.output.table, table, digits=READABLE_DIGITS)
log.info("scale factors (estimated / table):\n%s", table.to_string(index=False))
for row in table[table.flag != ""].itertuples():
    log.warning("scale factor of %s: %s", row.contrast, row.flag)
