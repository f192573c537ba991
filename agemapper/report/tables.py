"""Reading the association table for people: flags, UK Biobank fields, readable columns."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

METHOD_NAMES = {"fdr": "FDR", "bonferroni": "Bonferroni"}


def is_true(values: pd.Series) -> pd.Series:
    """A boolean column as written to TSV (True/False, 1/0, or empty = False)."""
    if values.dtype == bool:
        return values
    text = values.astype("string").fillna("").str.strip().str.lower()
    return text.isin(["true", "1", "1.0", "yes"]).astype(bool)


def significant(table: pd.DataFrame, significance: str) -> pd.Series:
    """The configured discovery flag (``significant_fdr`` or ``significant_bonferroni``)."""
    flag = f"significant_{significance}"
    if flag not in table.columns:
        raise ValueError(
            f"the association table has no column {flag!r} (it has {list(table.columns)})"
        )
    return is_true(table[flag])


def field_key(table: pd.DataFrame) -> pd.Series:
    """One key per UK Biobank field: instances (4080-2.0 / 4080-3.0), array entries
    (4080-2.1) and categorical levels (20116-2.0=1) of one field share it. Columns that are not
    named ``field-instance.array`` are their own key."""
    base = table.nidp.astype(str).str.split("=", n=1).str[0]
    shaped = base.str.fullmatch(r"\d+-\d+\.\d+").astype(bool)
    key = base.where(~shaped, base.str.split("-", n=1).str[0])
    if "field" in table.columns:
        field = table.field.astype("string").fillna("").str.replace(r"\.0$", "", regex=True)
        key = field.where(field != "", key).astype(str)
    return key


def display_title(table: pd.DataFrame) -> pd.Series:
    """The ``title`` the association table carries, or the nIDP column name without one."""
    if "title" not in table.columns:
        return table.nidp.astype(str)
    title = table.title.astype("string").fillna("").str.strip()
    return title.where(title != "", table.nidp.astype(str)).astype(str)


def round_significant(values, digits: int = 4) -> list:
    """Floats rounded to ``digits`` significant digits, NaN and inf as None (for JSON)."""
    x = np.asarray(values, dtype=float)
    return [float(f"{v:.{digits}g}") if np.isfinite(v) else None for v in x.tolist()]


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def contrast_order(table: pd.DataFrame, given=None) -> list[str]:
    """The contrasts of ``table`` in the order ``given`` (the config's), then the others in
    natural order (rsfmri_2 before rsfmri_10), ensembles last."""
    present = list(dict.fromkeys(table.contrast.astype(str)))
    first = [c for c in (given or []) if c in set(present)]
    rest = sorted(set(present) - set(first), key=lambda c: (c.startswith("ensemble_"), _natural(c)))
    return first + rest


# Kelly's colours of maximum contrast (without white, black and grey, which the plots use for
# other things, and with a teal); with more categories than colours they repeat, far apart
CATEGORY_COLOURS = [
    "#0067a5", "#f38400", "#875692", "#008856", "#be0032", "#f3c300", "#a1caf1", "#e68fac",
    "#604e97", "#8db600", "#882d17", "#f99379", "#00a9b5", "#b3446c", "#dcd300", "#654522",
    "#e25822", "#2b3d26", "#c2b280", "#f6a600",
]  # fmt: skip


def category_order(categories) -> list[str]:
    """Categories alphabetically, "uncategorised" last: the x order of the Manhattan plots."""
    return sorted(set(categories), key=lambda c: (c == "uncategorised", c))


def category_colours(categories) -> dict[str, str]:
    """One colour per category, the same in the PNG figures and in the browser."""
    order = category_order(categories)
    return {c: CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)] for i, c in enumerate(order)}


def categories(table: pd.DataFrame) -> pd.Series:
    """The FMRIB category of each test, "uncategorised" where it has none."""
    return table.category.astype("string").fillna("").replace("", "uncategorised").astype(str)


def layout(table: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """The x position of each nIDP (grouped by category, then by name) and each category's span.

    Computed on the whole table, so that a sample of it is drawn where the whole would be.
    """
    frame = pd.DataFrame({"nidp": table.nidp.astype(str), "category": categories(table)})
    frame = frame.drop_duplicates("nidp")
    order = category_order(frame.category)
    frame["_c"] = frame.category.map({c: i for i, c in enumerate(order)})
    frame = frame.sort_values(["_c", "nidp"]).reset_index(drop=True)
    frame["x"] = np.arange(len(frame))
    x = pd.Series(frame.x.to_numpy(), index=frame.nidp)
    spans = frame.groupby("category", sort=False).x.agg(["min", "max"]).reindex(order)
    spans = spans.rename(columns={"min": "start", "max": "end"}).reset_index()
    spans["centre"] = (spans.start + spans.end) / 2
    spans["band"] = np.arange(len(spans)) % 2
    return x, spans


def thresholds(table: pd.DataFrame, alpha: float, significance: str) -> list[dict]:
    """-log10 p above which a test is significant: Bonferroni and FDR over all tests."""
    m = int(np.isfinite(table.p.to_numpy(float)).sum())
    out = []
    if m:
        out.append(
            {
                "method": "bonferroni",
                "y": float(-np.log10(alpha / m)),
                "label": f"Bonferroni {alpha}",
                "used": significance == "bonferroni",
            }
        )
    if "p_fdr" in table.columns:
        passing = table.neglog10_p[table.p_fdr.to_numpy(float) < alpha]
        if len(passing):
            out.append(
                {
                    "method": "fdr",
                    "y": float(passing.min()),
                    "label": f"FDR {alpha}",
                    "used": significance == "fdr",
                }
            )
    return out
