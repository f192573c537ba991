"""Adapter: preprocess one sex and cache of the contrasts that read one file, decoded once."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.images.contrasts import Contrast
from agemapper.images.preprocess import preprocess_contrasts
from agemapper.images.subjects import read_subjects, select
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
w, p, i, out = snakemake.wildcards, snakemake.params, snakemake.input, snakemake.output
subjects = select(read_subjects(i.subjects), w.sex, p.splits)
contrasts = [Contrast.from_dict(row) for row in p.contrasts]
references = list(i.reference) or None  # the training split's manifests
if p.networks:  # apply mode: the networks' training inputs (None: the cohort's), by contrast
    from agemapper.networks.pretrained import input_reference

    references = [input_reference(weights) for weights in p.networks]
preprocess_contrasts(
    subjects, contrasts, p.data_directory, p.grid, out.cache, out.manifest, out.info,
    qc_tables=out.qc, checkpoints=p.checkpoint, references=references,
    threads=snakemake.threads, qc=p.qc, dtype=p.dtype,
)  # fmt: skip
