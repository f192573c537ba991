"""Adapter: write the synthetic UK Biobank cohort (images, tables, ground truth)."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.images.contrasts import read_contrasts, select
from agemapper.images.subjects import read_subjects
from agemapper.runner import log_to
from agemapper.synth.cohort import generate

log = log_to(snakemake.log[0])
p = snakemake.params
summary = generate(
    read_subjects(snakemake.input.splits),
    select(read_contrasts(snakemake.input.contrasts), p.contrasts),
    p.data_directory,
    dict(snakemake.output.items()),
    counts=p.synthetic["subjects_per_sex"],
    seed=p.synthetic["seed"],
    noise=p.synthetic.get("noise", 1.0),
    workers=snakemake.threads,
)
log.info("synthetic cohort written: %s", summary)
