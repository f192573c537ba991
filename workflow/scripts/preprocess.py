"""Adapter: preprocess one contrast/sex/split into a cache + manifest (+ QC table)."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)
from agemapper.images.contrasts import Contrast
from agemapper.images.preprocess import preprocess_split
from agemapper.images.subjects import read_subjects, select
from agemapper.runner import log_to

log = log_to(snakemake.log[0])
w, p, out = snakemake.wildcards, snakemake.params, snakemake.output
subjects = select(read_subjects(snakemake.input.subjects), w.sex, p.splits)
contrast = Contrast(**{("name" if k == "contrast" else k): v for k, v in p.contrast.items()})
reference = snakemake.input.reference or None  # the training split's manifest
if snakemake.input.networks:  # apply mode: the networks' training inputs (None: the cohort's)
    from agemapper.networks.pretrained import input_reference

    reference = input_reference(snakemake.input.networks)
preprocess_split(
    subjects,
    contrast,
    p.data_directory,
    p.grid,
    out.cache,
    out.manifest,
    out.info,
    threads=snakemake.threads,
    qc=p.qc,
    qc_table=out.qc,
    dtype=p.dtype,
    reference=reference,
    checkpoint=p.checkpoint,
)
