"""The demo's synthetic cohort: UK Biobank-like subject folders with known ground truth.

Kept apart from the pipeline: only the demo's workflow scripts, the evaluation against the
synthetic truth (:mod:`agemapper.report.evaluate`) and the tests import it.
"""
