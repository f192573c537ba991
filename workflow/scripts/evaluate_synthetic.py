"""Adapter: compare the run with the synthetic cohort's ground truth; print and save it."""

import pandas as pd

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper import evaluate
from agemapper.io import write_table, write_text
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
i = snakemake.input


def read(path):
    return pd.read_csv(path, sep="," if path.endswith(".csv") else "\t", dtype={"subject": str})


deltas = read(i.deltas)
brain = evaluate.brain_age(deltas, read(i.metrics), read(i.latent_deltas))
summary, _ = evaluate.associations(read(i.significant), read(i.planted), deltas.contrast.unique())
text = evaluate.report(brain, summary, evaluate.pooled_age_correlation(deltas))
write_table(snakemake.output.table, brain)
write_text(snakemake.output.report, text + "\n")
print(text)
