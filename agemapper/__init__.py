"""AgeMapper: brain ages and brain-age deltas from UK Biobank MRI, as a library.

The Snakemake workflow under ``workflow/`` is a thin layer over this package: every
stage is a function of files to files implemented here and unit-tested on its own.
"""

__version__ = "0.1.0"
