"""Adapter: compare the run with the synthetic cohort's ground truth; print and save it."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.io import READABLE_DIGITS, read_table, write_table, write_text
from agemapper.report import evaluate
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
i = snakemake.input
deltas = read_table(i.deltas, dtype={"subject": str})
brain = evaluate.brain_age(
    deltas, read_table(i.metrics), read_table(i.latent_deltas, dtype={"subject": str})
)
summary = evaluate.association_summaries(
    read_table(i.significant), read_table(i.planted), deltas.contrast.unique()
)
text = evaluate.report(brain, summary, evaluate.pooled_age_correlation(deltas))
write_table(snakemake.output.table, brain, digits=READABLE_DIGITS)
write_text(snakemake.output.report, text + "\n")
write_text(snakemake.output.page, evaluate.page(text, brain, summary))
print(text)
