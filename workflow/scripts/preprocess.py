"""Adapter: preprocess one contrast/sex/split into a cache + manifest."""

import _repo  # noqa: F401  (this repository's agemapper first on the path)

from agemapper.contrasts import Contrast
from agemapper.preprocess import preprocess_split
from agemapper.runner import log_to
from agemapper.subjects import read_excluded, read_subjects, select

log = log_to(snakemake.log[0])
w, p, out = snakemake.wildcards, snakemake.params, snakemake.output
excluded = read_excluded(snakemake.input.excluded) if "excluded" in snakemake.input.keys() else None
subjects = select(read_subjects(snakemake.input.subjects, excluded), w.sex, w.split)
contrast = Contrast(**{("name" if k == "contrast" else k): v for k, v in p.contrast.items()})
preprocess_split(
    subjects,
    contrast,
    p.data_directory,
    p.grid,
    out.cache,
    out.manifest,
    out.info,
    threads=snakemake.threads,
)
