"""AgeMapper: brain ages and brain-age deltas from UK Biobank MRI, as a library.

The Snakemake workflow under ``workflow/`` is a thin layer over this package: every
stage is a function of files to files implemented here and unit-tested on its own.
The subpackages follow the pipeline, each layer importing only those below it:

- :mod:`agemapper.images`: subject folders -> a preprocessed cache;
- :mod:`agemapper.networks`: a cache -> brain ages (training, prediction, weight formats);
- :mod:`agemapper.stats`: brain ages -> ensembles, deltas, associations with nIDPs;
- :mod:`agemapper.report`: figures and the evaluation of the demo against its truth;

beside shared helpers (:mod:`~agemapper.errors`, :mod:`~agemapper.io`, :mod:`~agemapper.paths`,
:mod:`~agemapper.qc`, :mod:`~agemapper.runner`, :mod:`~agemapper.seeds`,
:mod:`~agemapper.progress`, :mod:`~agemapper.tables`) and the demo's synthetic cohort,
:mod:`agemapper.synth`, which the pipeline never imports. :mod:`agemapper.cli` is the
``agemapper`` command, whose subcommands are the package's tools.
"""

__version__ = "0.1.0"
