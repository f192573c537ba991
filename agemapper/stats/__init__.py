"""Stages 3-5, brain ages -> deltas and associations: the statistics, on tables only.

- :mod:`~agemapper.stats.ensembles`: ensembles of contrasts (mean, linear, elastic net).
- :mod:`~agemapper.stats.deltas`: brain-age deltas and their age-bias correction.
- :mod:`~agemapper.stats.ukb`: what a FUNPACK column is, from FUNPACK's FMRIB configuration.
- :mod:`~agemapper.stats.extraction`: the nIDP table from the UK Biobank main dataset (FUNPACK).
- :mod:`~agemapper.stats.nidps`: nIDP tables read one column per test, and their labels.
- :mod:`~agemapper.stats.associations`: deconfounded correlations of deltas with nIDPs.
- :mod:`~agemapper.stats.correlation`: Pearson's r, guarded (metrics, evaluation, figures).

Never imports :mod:`agemapper.networks` (no torch needed here) or :mod:`agemapper.report`.
"""
