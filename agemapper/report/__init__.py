"""What people look at: figures of every stage, and the evaluation against the synthetic truth.

- :mod:`~agemapper.report.plots`: brain-age, training and association figures.
- :mod:`~agemapper.report.evaluate`: the demo's results against its ground truth (the only
  module of the package, outside :mod:`agemapper.synth`, that imports the synthetic cohort).

The top layer: may import every stage below it.
"""
