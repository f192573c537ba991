"""Stage 1, subject folders -> a cache: reading UK Biobank images and preprocessing them.

- :mod:`~agemapper.images.grids`: the MNI152 grids and the AgeMapper crop box.
- :mod:`~agemapper.images.contrasts`: the contrast table (file, 4D volume, scaling per contrast).
- :mod:`~agemapper.images.subjects`: the subject table (sex, split, half, age).
- :mod:`~agemapper.images.nifti`: strict, fast NIfTI reading (``load_volume``).
- :mod:`~agemapper.images.preprocess`: crop, normalise, scale, resample (``preprocess_split``).
- :mod:`~agemapper.images.cache`: the packed volume cache training reads (``CacheWriter``,
  ``VolumeCache``).

This layer imports nothing from :mod:`agemapper.networks`, :mod:`agemapper.stats` or
:mod:`agemapper.report` (an import-linter contract in ``pyproject.toml``).
"""
