"""Self-contained HTML pages for the report: tables people can sort and filter, the banner.

The Snakemake report shows images, HTML and PDF files but only offers tables (TSV) for
download; each table people need to read is therefore also written as a small HTML page:
the table itself (rounded for reading), a filter box and sortable columns (``assets/table.js``,
a few lines of glue), nothing loaded from the network.
"""

from __future__ import annotations

import html
from importlib import resources

import numpy as np
import pandas as pd

from agemapper.io import write_text

SYNTHETIC_BANNER = (
    '<div class="banner" role="note"><strong>Synthetic cohort.</strong> These results come from '
    "the demo's synthetic UK Biobank-like cohort (generated images, phenotypes and planted "
    "associations), not from real participants. They show what the workflow does, and how well "
    "it recovers a known truth; they say nothing about real brains.</div>"
)
MAX_TABLE_ROWS = 20_000  # a table page shows at most this many rows (and says so)


def escape(text) -> str:
    return html.escape(str(text), quote=True)


def _asset(name: str) -> str:
    return resources.files("agemapper.report").joinpath("assets", name).read_text("utf-8")


def table_script() -> str:
    """The glue that sorts and filters ``table.data`` elements."""
    return _asset("table.js")


def style() -> str:
    """The pages' shared CSS."""
    return _asset("style.css")


def page(title: str, body: str, synthetic: bool = False, script: str = "") -> str:
    """A complete HTML document: title, optional synthetic-cohort banner, body, glue script."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>\n{style()}\n</style>\n</head>\n<body>\n"
        f"{SYNTHETIC_BANNER if synthetic else ''}\n<h1>{escape(title)}</h1>\n{body}\n"
        + (f"<script>\n{script}\n</script>\n" if script else "")
        + "</body>\n</html>\n"
    )


def _cell(value, digits: int) -> tuple[str, str]:
    """(text shown, sort key) of one cell; floats to ``digits`` significant digits."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "", ""
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), ("1" if value else "0")
    if isinstance(value, (int, np.integer)):
        return str(value), str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}", repr(float(value))
    return str(value), str(value)


def html_table(frame: pd.DataFrame, digits: int = 4, max_rows: int = MAX_TABLE_ROWS) -> str:
    """An HTML table with numeric sort keys (``data-v``) for the glue script."""
    shown = frame.head(max_rows)
    numeric = [pd.api.types.is_numeric_dtype(shown[c]) for c in shown.columns]
    head = "".join(
        f'<th data-type="{"num" if num else "text"}" title="click to sort">{escape(c)}</th>'
        for c, num in zip(shown.columns, numeric, strict=True)
    )
    body = []
    for row in shown.itertuples(index=False):
        cells = []
        for value in row:
            text, key = _cell(value, digits)
            cells.append(f'<td data-v="{escape(key)}">{escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def table_page(
    frame: pd.DataFrame,
    title: str,
    description: str = "",
    source: str = "",
    synthetic: bool = False,
    digits: int = 4,
    max_rows: int = MAX_TABLE_ROWS,
) -> str:
    """A page with one table, a filter box and sortable columns."""
    if len(frame) > max_rows:
        count = f"the first {max_rows:,} of {len(frame):,} rows"
    else:
        count = f"{len(frame):,} row{'s' if len(frame) != 1 else ''}"
    intro = f"<p>{description}</p>" if description else ""
    where = f" Full table: <code>{escape(source)}</code>." if source else ""
    body = (
        f'{intro}<p class="note">{count}; click a column header to sort, type to filter.{where}</p>'
        '<p><input type="search" class="filter" placeholder="filter rows"> '
        '<span class="count"></span></p>'
        f"{html_table(frame, digits, max_rows)}"
    )
    return page(title, body, synthetic, table_script())


def write_table_page(path, frame: pd.DataFrame, title: str, **kwargs) -> None:
    write_text(path, table_page(frame, title, **kwargs))


# The tables of the report: name -> (title, what it shows). The workflow's rules name their
# inputs and outputs after these keys (workflow/scripts/render_tables.py).
TABLE_PAGES = {
    "metrics": (
        "Brain-age accuracy per contrast, sex and split",
        "MAE (years) of the replicates' mean prediction, its correlation with age, the "
        "correlation of the delta with age before and after bias correction, the replicates' "
        "own MAEs (mean, min, max), the mean-age baseline, and the bias correction with its "
        "coefficients (correction_*: for smith2019, the terms of the fitted delta in the "
        "standardised age z = (age - age_mean) / age_scale; for linear, predicted = slope * age "
        "+ intercept).",
    ),
    "weights": (
        "Ensemble weights",
        "The weight of each contrast, and the intercept (years), in each ensemble of contrasts, "
        "per sex, fitted on the validation split.",
    ),
    "uncertainty": (
        "Replicate spread and error, per contrast and sex",
        "Test split. spearman_rho: rank correlation of the spread of the replicate networks' "
        "predictions (predicted_sd in deltas/all.csv) with the absolute corrected delta, with "
        "its 95% interval (rho_low, rho_high) and p; mae_lowest_fifth / mae_highest_fifth: "
        "mean absolute corrected delta (years) of the fifth of subjects with the smallest / "
        "largest spread.",
    ),
    "significant": (
        "Significant associations (discoveries)",
        "Tests whose discovery p, corrected over all tests by the configured method, is below "
        "alpha; with replication, the same test in half B and whether it replicated.",
    ),
    "associations": (
        "All association tests",
        "Every test of a corrected brain-age delta with an nIDP, most significant first. The "
        "association browser shows the same tests with a Manhattan plot.",
    ),
    "dropped": (
        "nIDP columns and rows left out",
        "Columns of the nIDP table that were not tested, and rows (subjects) that were not "
        "used, with the reason.",
    ),
    "qc": (
        "Subjects left out by quality control",
        "Every subject left out of a stage (and contrast) under qc: skip, with the file and the "
        "reason; one line saying so when none was.",
    ),
    "scale_factors": (
        "Scale factors: the table's and those estimated from the training split",
        "Estimated: the mean over training subjects of each normalised volume's maximum; "
        "ratio = estimated / table. A ratio beyond a factor 1.5 either way is flagged.",
    ),
}


# pages that show only the first rows of their table (the browser holds the rest)
PAGE_ROWS = {"associations": 5_000}


def write_named_page(path, name: str, frame: pd.DataFrame, source: str = "", **kwargs) -> None:
    """The page of one of ``TABLE_PAGES``."""
    title, description = TABLE_PAGES[name]
    kwargs.setdefault("max_rows", PAGE_ROWS.get(name, MAX_TABLE_ROWS))
    write_table_page(path, frame, title, description=description, source=source, **kwargs)
