"""The association browser: one self-contained HTML page to explore the associations.

The page holds the discovery and replication results as a sortable, searchable, filterable
table (DataTables, from the ``itables`` package's offline bundle) beside an interactive
Manhattan plot and a contrast x category summary (Vega-Lite specifications built with Altair;
Vega, Vega-Lite and vega-embed from ``vl-convert-python``'s bundle). Everything is inlined,
gzipped (base64; the glue unpacks it with the browser's DecompressionStream, so that even at
study scale the page stays under the 2 MB that Chromium allows a data: URL, which is how the
HTML report embeds it): the page works from a file, offline, and inside the Snakemake report.
A little glue (``assets/browser.js``) links the views: the filters act on the table and the
plot at once, a click on a summary cell filters the table to that contrast and category, a
click on a point finds its nIDP in the table.

At study scale (57 contrasts x 2 sexes x thousands of nIDPs) the page loads every significant
test and a sample of the others (``select_rows``): the strongest non-significant tests and a
random sample of the rest, so the plot keeps its shape and the page stays small and fast. The
page says what it holds; the full table stays in ``results/associations/all.tsv``.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from agemapper.io import write_text
from agemapper.report import tables
from agemapper.report.pages import SYNTHETIC_BANNER, escape, style
from agemapper.stats.associations import find_replication_p_column

MAX_ROWS = 25_000  # a table with at most this many tests is loaded whole
BACKGROUND = 20_000  # otherwise: every significant test + this many others ...
STRONGEST = 2_000  # ... of which the strongest non-significant ones, the rest at random


def select_rows(
    table: pd.DataFrame,
    significant: pd.Series,
    max_rows: int = MAX_ROWS,
    background: int = BACKGROUND,
    strongest: int = STRONGEST,
    seed: int = 0,
) -> tuple[pd.DataFrame, str]:
    """The tests the page loads, and a sentence saying which.

    All of them when there are at most ``max_rows``; otherwise every significant test, the
    ``strongest`` non-significant tests (smallest p) and a random sample of the other
    non-significant ones, ``background`` non-significant tests in all.
    """
    if len(table) <= max_rows:
        return table, f"all {len(table):,} tests"
    rest = table[~significant]
    keep = rest.nsmallest(min(strongest, background), "p").index
    others = rest.index.difference(keep)
    fill = min(len(others), max(0, background - len(keep)))
    rng = np.random.default_rng(seed)
    sample = others[np.sort(rng.choice(len(others), size=fill, replace=False))]
    chosen = table.index[significant].union(keep).union(sample)
    n_sig = int(significant.sum())
    note = (
        f"all {n_sig:,} significant tests and {len(keep) + fill:,} of the "
        f"{len(rest):,} others (the {len(keep):,} strongest and {fill:,} at random), "
        f"{len(chosen):,} of {len(table):,} tests"
    )
    return table.loc[chosen], note


def payload(
    table: pd.DataFrame, alpha: float, significance: str, contrasts=None, **select
) -> tuple[dict, pd.DataFrame]:
    """The data of the page, columnar and dictionary-encoded (JSON), and the chosen rows."""
    sig = tables.significant(table, significance)
    x, spans = tables.layout(table)
    rows, note = select_rows(table, sig, **select)
    rows = rows.copy()
    rows["_sig"] = sig.loc[rows.index]
    order = rows.assign(_x=rows.nidp.astype(str).map(x)).sort_values(["_x", "p"])
    rows = order.drop(columns="_x")
    contrasts = tables.contrast_order(table, contrasts)
    sexes = list(dict.fromkeys(table.sex.astype(str)))
    categories = spans.category.tolist()
    nidps = rows.drop_duplicates("nidp")
    nidp_index = {n: i for i, n in enumerate(nidps.nidp.astype(str))}
    category_index = {c: i for i, c in enumerate(categories)}
    p_col = f"p_{significance}"
    p_b_col = find_replication_p_column(rows)
    replication = "r_B" in rows.columns

    def num(column):
        return tables.round_significant(rows[column]) if column in rows.columns else None

    replicated = tables.is_true(rows.replicated) if "replicated" in rows.columns else None
    found = table[sig].assign(
        _field=tables.field_key(table[sig]), _cat=tables.categories(table[sig])
    )
    counts = (
        found.drop_duplicates(["contrast", "_cat", "_field"]).groupby(["contrast", "_cat"]).size()
    )
    per_category = counts.groupby(level="_cat").sum().sort_values(ascending=False)
    data = {
        "meta": {
            "tests": len(table),
            "loaded": len(rows),
            "significant": int(sig.sum()),
            "replicated": int(tables.is_true(table.replicated).sum()) if replication else None,
            "alpha": alpha,
            "method": tables.METHOD_NAMES.get(significance, significance),
            "replication": replication,
            "note": note,
            "max_neglog10_p": float(np.nanmax(table.neglog10_p)) if len(table) else 1.0,
            "max_fields": int(counts.max()) if len(counts) else 0,
            "summary_categories": per_category.index.tolist(),
        },
        "contrasts": contrasts,
        "sexes": sexes,
        "categories": categories,
        "nidps": {
            "name": nidps.nidp.astype(str).tolist(),
            "title": tables.display_title(nidps).tolist(),
            "field": tables.field_key(nidps).tolist(),
            "category": tables.categories(nidps).map(category_index).tolist(),
            "x": nidps.nidp.astype(str).map(x).astype(int).tolist(),
        },
        "tests": {
            "nidp": rows.nidp.astype(str).map(nidp_index).tolist(),
            "contrast": rows.contrast.astype(str).map({c: i for i, c in enumerate(contrasts)}),
            "sex": rows.sex.astype(str).map({s: i for i, s in enumerate(sexes)}),
            "n": rows.n.astype(int).tolist(),
            "r": num("r"),
            "p": num("p"),
            "lp": num("neglog10_p"),
            "pc": num(p_col),
            "sig": rows._sig.astype(int).tolist(),
            "rB": num("r_B"),
            "pBc": num(p_b_col) if p_b_col else None,
            "rep": replicated.astype(int).tolist() if replicated is not None else None,
        },
        "colours": tables.category_colours(categories),
        "spans": spans[["category", "start", "end", "centre", "band"]].to_dict("records"),
        "thresholds": tables.thresholds(table, alpha, significance),
    }
    for key in ("contrast", "sex"):
        data["tests"][key] = data["tests"][key].astype(int).tolist()
    return data, rows


def manhattan_spec(data: dict) -> dict:
    """Vega-Lite: -log10 p of each loaded test along the nIDPs, grouped by category."""
    import altair as alt

    spans = pd.DataFrame(data["spans"])
    n = int(spans.end.max()) + 1 if len(spans) else 1
    label = " : ".join(
        f"datum.value == {c:g} ? {json.dumps(name)}"
        for c, name in zip(spans.centre, spans.category, strict=True)
    )
    label_expr = f"{label} : ''" if label else "''"
    x = alt.X(
        "x:Q",
        title="nIDP, grouped by FMRIB category (drag to pan, scroll to zoom)",
        scale=alt.Scale(domain=[-0.5, n - 0.5], nice=False, zero=False),
        axis=alt.Axis(
            values=[float(c) for c in spans.centre],
            labelExpr=label_expr,
            labelAngle=-90,  # vertical: neighbours overlap only when closer than a line
            labelAlign="right",
            labelBaseline="middle",
            labelFontSize=10,
            labelLimit=220,
            labelOverlap="greedy",  # zooming in shows the labels that would collide
            grid=False,
            ticks=False,
        ),
    )
    top = max([t["y"] for t in data["thresholds"]] + [data["meta"]["max_neglog10_p"], 1.0])
    y = alt.Y("neglog10_p:Q", title="-log10 p (discovery)", scale=alt.Scale(domain=[0, top * 1.08]))
    shown = (
        "(sel_contrast == '' || datum.contrast == sel_contrast)"
        " && (sel_sex == '' || datum.sex == sel_sex)"
        " && (!sel_significant || datum.significant)"
        " && (!sel_replicated || datum.replicated === true)"
    )
    lit = (
        "(sel_category == '' || datum.category == sel_category)"
        " && (sel_text == '' || indexof(lower(datum.title + ' ' + datum.nidp), sel_text) >= 0)"
    )
    params = [
        alt.param(name=name, value=value)
        for name, value in (
            ("sel_contrast", ""),
            ("sel_sex", ""),
            ("sel_category", ""),
            ("sel_text", ""),
            ("sel_significant", False),
            ("sel_replicated", False),
        )
    ]
    method = data["meta"]["method"]
    tooltip = [
        alt.Tooltip("title:N", title="nIDP"),
        alt.Tooltip("nidp:N", title="column"),
        alt.Tooltip("category:N"),
        alt.Tooltip("contrast:N"),
        alt.Tooltip("sex:N"),
        alt.Tooltip("n:Q"),
        alt.Tooltip("r:Q", format=".3f"),
        alt.Tooltip("p:Q", format=".3g"),
        alt.Tooltip("p_corr:Q", format=".3g", title=f"p, {method}"),
    ]
    if data["meta"]["replication"]:
        tooltip += [
            alt.Tooltip("r_B:Q", format=".3f", title="r, half B"),
            alt.Tooltip("p_B_corr:Q", format=".3g", title=f"p half B, {method} over discoveries"),
            alt.Tooltip("replicated_text:N", title="replicated"),
        ]
    tests = alt.Data(name="tests")
    bands = (
        alt.Chart(alt.Data(values=[s for s in data["spans"] if s["band"]]))
        .transform_calculate(x="datum.start - 0.5", x2="datum.end + 0.5")
        .mark_rect(color="#f1f1f1")
        .encode(x=x, x2="x2:Q")
    )
    background = (
        alt.Chart(tests)
        .transform_filter(f"{shown} && !datum.significant")
        .mark_circle(size=12, color="#9e9e9e", clip=True)
        .encode(
            x=x, y=y, opacity=alt.condition(lit, alt.value(0.55), alt.value(0.08)), tooltip=tooltip
        )
    )
    foreground = (
        alt.Chart(tests)
        .transform_filter(f"{shown} && datum.significant")
        .mark_point(filled=True, size=55, clip=True)
        .encode(
            x=x,
            y=y,
            color=alt.Color(
                "category:N",
                scale=alt.Scale(domain=list(data["colours"]), range=list(data["colours"].values())),
                legend=alt.Legend(
                    title="category (significant tests)",
                    values=tables.category_order(data["meta"]["summary_categories"]),
                    symbolLimit=40,
                    labelLimit=280,
                )
                if data["meta"]["summary_categories"]
                else None,
            ),
            stroke=alt.condition(
                "datum.replicated === true", alt.value("#000000"), alt.value("transparent")
            ),
            strokeWidth=alt.value(1.6),
            opacity=alt.condition(lit, alt.value(0.95), alt.value(0.12)),
            tooltip=tooltip,
        )
    )
    rules = alt.Chart(alt.Data(values=data["thresholds"])).encode(y="y:Q")
    lines = rules.mark_rule(strokeWidth=1).encode(
        strokeDash=alt.condition("datum.used", alt.value([1, 0]), alt.value([4, 3])),
        color=alt.condition("datum.used", alt.value("#222222"), alt.value("#888888")),
    )
    labels = rules.mark_text(align="right", dx=-4, dy=-5, fontSize=10, color="#444").encode(
        x=alt.value("width"), text="label:N"
    )
    zoom = alt.selection_interval(bind="scales", encodings=["x"], name="zoom")
    chart = (
        alt.layer(bands, background.add_params(zoom), foreground, lines, labels)
        .add_params(*params)
        .properties(width="container", height=380)
    )
    return chart.to_dict()


def summary_spec(data: dict) -> dict:
    """Vega-Lite: distinct significant fields per contrast and category (click: filter)."""
    import altair as alt

    categories = data["meta"]["summary_categories"]
    method = data["meta"]["method"]
    base = (
        alt.Chart(alt.Data(name="tests"))
        .transform_filter("datum.significant")
        .transform_aggregate(fields="distinct(field)", groupby=["contrast", "category"])
        .encode(
            x=alt.X(
                "category:N",
                sort=categories,
                title=None,
                axis=alt.Axis(labelAngle=-40, labelLimit=260, orient="top"),
            ),
            y=alt.Y("contrast:N", sort=data["contrasts"], title=None),
        )
    )
    selected = "datum.contrast == sel_contrast && datum.category == sel_category"
    cells = base.mark_rect(cursor="pointer").encode(
        color=alt.Color(
            "fields:Q",
            scale=alt.Scale(scheme="blues", domain=[0, max(1, data["meta"]["max_fields"]) * 1.25]),
            legend=None,
        ),
        stroke=alt.condition(selected, alt.value("#d62728"), alt.value("#ffffff")),
        strokeWidth=alt.condition(selected, alt.value(2.5), alt.value(0.5)),
        tooltip=[
            alt.Tooltip("contrast:N"),
            alt.Tooltip("category:N"),
            alt.Tooltip("fields:Q", title=f"fields significant ({method})"),
        ],
    )
    text = base.mark_text(fontSize=10).encode(
        text="fields:Q",
        color=alt.condition(
            f"datum.fields > {data['meta']['max_fields'] * 0.6}",
            alt.value("white"),
            alt.value("black"),
        ),
    )
    params = [alt.param(name=n, value="") for n in ("sel_contrast", "sel_category")]
    return (
        alt.layer(cells, text)
        .add_params(*params)
        .properties(
            width=alt.Step(34),
            height=alt.Step(18),
        )
        .to_dict()
    )


def _asset(name: str) -> str:
    return resources.files("agemapper.report").joinpath("assets", name).read_text("utf-8")


def vega_javascript() -> str:
    """vega-embed with Vega and Vega-Lite (for Altair's Vega-Lite version), one classic script."""
    import altair as alt
    import vl_convert

    version = "_".join(alt.SCHEMA_VERSION.split(".")[:2])  # as Altair asks vl-convert for it
    return vl_convert.javascript_bundle(vl_version=version)


def datatables_javascript() -> tuple[str, str]:
    """DataTables (with jQuery) from itables' offline bundle, as a module setting
    ``window.DataTable``; and its CSS."""
    bundle = resources.files("itables").joinpath("html", "dt_bundle.js").read_text("utf-8")
    css = resources.files("itables").joinpath("html", "dt_bundle.css").read_text("utf-8")
    start = bundle.rfind("export{")
    end = bundle.find("}", start)
    exports = {}
    for part in bundle[start + len("export{") : end].split(","):
        local, _, name = part.strip().partition(" as ")
        exports[name or local] = local
    if start < 0 or "default" not in exports:
        raise RuntimeError("itables' dt_bundle.js no longer ends by exporting DataTable")
    module = bundle[:start] + f"window.DataTable={exports['default']};" + bundle[end + 1 :]
    return module, css


def _script(text: str) -> str:
    if re.search(r"</script", text, flags=re.I):
        raise RuntimeError("an inlined script contains '</script'")
    return text


def _json(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _pack(text: str) -> str:
    """gzip, then base64: what the page's glue unpacks (DecompressionStream)."""
    return base64.b64encode(gzip.compress(text.encode("utf-8"), 9, mtime=0)).decode("ascii")


def render(
    table: pd.DataFrame,
    alpha: float,
    significance: str,
    synthetic: bool = False,
    source: str = "results/associations/all.tsv",
    contrasts=None,
    **select,
) -> tuple[str, dict]:
    """The page as a string, and its ``meta`` (what it holds); ``contrasts``: their order."""
    data, _ = payload(table, alpha, significance, contrasts, **select)
    data["meta"]["source"] = source
    dt_js, dt_css = datatables_javascript()
    replacements = {
        "{{TITLE}}": "Associations of brain-age deltas with nIDPs",
        "{{STYLE}}": style(),
        "{{BANNER}}": SYNTHETIC_BANNER if synthetic else "",
        "{{VEGA}}": _pack(vega_javascript()),
        "{{DATATABLES}}": _pack(dt_js),
        "{{DATATABLES_CSS}}": _pack(dt_css),
        "{{DATA}}": _pack(_json(data)),
        "{{MANHATTAN}}": _pack(_json(manhattan_spec(data))),
        "{{SUMMARY}}": _pack(_json(summary_spec(data))),
        "{{GLUE}}": _script(_asset("browser.js")),
        "{{SOURCE}}": escape(source),
    }
    page = _asset("browser.html")
    for key, value in replacements.items():
        page = page.replace(key, value)
    return page, data["meta"]


def write_browser(
    table: pd.DataFrame,
    path,
    alpha: float = 0.05,
    significance: str = "fdr",
    synthetic: bool = False,
    source: str = "results/associations/all.tsv",
    contrasts=None,
    **select,
) -> dict:
    """Write the browser page for an association table; returns what the page holds."""
    page, meta = render(table, alpha, significance, synthetic, source, contrasts, **select)
    write_text(path, page)
    return meta | {"bytes": len(page.encode("utf-8")), "path": str(Path(path))}
