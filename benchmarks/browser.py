"""The association browser at study scale: page size, build time and load time in Chromium.

Generates an association table of the study's size, 57 contrasts x 2 sexes x 5,000 nIDPs =
570,000 tests, with the columns the workflow writes (discovery on half A, replication on half
B, FDR and Bonferroni, labels from FUNPACK's field and category tables): real UK Biobank field
titles and FMRIB categories, categorical fields as one column per level, instances and array
entries of some fields, most tests null and a few hundred nIDPs truly associated with the
contrasts of one modality (or all). Then builds the browser page (``agemapper.report.browser``)
and opens it in headless Chromium (Debian's ``chromium`` with ``chromedriver``, driven by
Selenium), timing from navigation start to the moment the page says it is ready (table and
both charts drawn) and then a filter, its reset, a sort and a text search; it checks the page
for console errors. Baseline, in the same run: the same page with every test loaded.

    python benchmarks/browser.py                # 570,000 tests: baseline (minutes) and ours
    python benchmarks/browser.py --no-baseline  # only the workflow's page (seconds)
    python benchmarks/browser.py --small        # 6 contrasts x 2 sexes x 300 nIDPs (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the browser the tests drive (browser_checks.py)

from agemapper.stats import associations as A  # noqa: E402
from browser_checks import CHROMIUM, DRIVER, chromium  # noqa: E402

SKIP_CATEGORIES = {
    "misc, ignored",
    "exclude",
    "health dates",
    "COVID misc, ignored",
    "ID, age, sex, brain MRI protocol Phase",
    "pending, to sort out categories later",
    "genetics",
    "health sources",
}


def nidp_columns(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` nIDP columns named as the workflow names them, from real UK Biobank fields."""
    from agemapper.stats.nidps import category_table, field_table

    fields = category_table().join(field_table(), how="inner")
    fields = fields[~fields.category.isin(SKIP_CATEGORIES) & fields.value_type.isin([11, 21, 31])]
    chosen = rng.permutation(fields.index.to_numpy())
    columns: list[str] = []
    for field in chosen:
        if fields.value_type[field] == 21:  # categorical: a column per level
            columns += [f"{field}-2.0={level}" for level in range(1, int(rng.integers(2, 5)) + 1)]
        elif rng.random() < 0.15:  # a second instance and array entry
            columns += [f"{field}-2.0", f"{field}-3.0", f"{field}-2.1"]
        else:
            columns.append(f"{field}-2.0")
        if len(columns) >= count:
            return columns[:count]
    raise ValueError(f"FUNPACK's tables give only {len(columns)} nIDP columns")


def _half(table: pd.DataFrame, true_r: np.ndarray, n: int, rng) -> pd.DataFrame:
    out = table.copy()
    out["n"] = n - rng.integers(0, n // 5, len(out))  # nIDPs are missing for some subjects
    out["df"] = out.n - 12
    r = np.clip(true_r + rng.normal(0, 1, len(out)) / np.sqrt(out.n), -0.99, 0.99)
    out["r"] = r
    out["t"] = r * np.sqrt(out.df / (1 - r * r))
    return out


def study_table(
    contrasts: int = 57,
    sexes=("female", "male"),
    nidps: int = 5000,
    subjects: int = 2500,
    associated: int = 150,
    seed: int = 0,
    alpha: float = 0.05,
    significance: str = "fdr",
) -> pd.DataFrame:
    """An association table of the study's shape (see the module docstring)."""
    rng = np.random.default_rng(seed)
    table = pd.read_csv(REPO / "config/contrasts.tsv", sep="\t")
    names = table.contrast.tolist()[:contrasts]
    modality = table.modality.to_numpy()[:contrasts]
    columns = nidp_columns(nidps, rng)
    C, S, J = len(names), len(sexes), len(columns)
    c, s, j = (a.ravel() for a in np.meshgrid(range(C), range(S), range(J), indexing="ij"))
    keys = pd.DataFrame(
        {
            "contrast": pd.Categorical.from_codes(c, names),
            "sex": pd.Categorical.from_codes(s, list(sexes)),
            "nidp": pd.Categorical.from_codes(j, columns),
        }
    )
    true_r = np.zeros(len(keys))
    kinds = [*sorted(set(modality)), "all"]
    for column in rng.choice(J, size=min(associated, J), replace=False):
        strength = rng.uniform(0.07, 0.2) * rng.choice([-1, 1])
        target = kinds[rng.integers(len(kinds))]
        for ci in np.flatnonzero((modality == target) | (target == "all")):
            rows = (ci * S + np.arange(S)) * J + column
            true_r[rows] = strength * rng.uniform(0.6, 1.0, S)
    discovery = _half(keys, true_r, subjects, rng)
    replication = _half(keys, true_r, subjects, rng)
    out = A.discover_and_replicate(discovery, replication, alpha, significance)
    return A.with_labels(out)


def load_in_chromium(page: Path, binary: str, driver: str, timeout: float = 120) -> dict:
    """Open ``page`` in headless Chromium; time until ready; console errors; a screenshot."""
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium(binary, driver) as browser:
        browser.set_script_timeout(timeout)  # a busy page answers late
        browser.set_page_load_timeout(timeout)
        start = time.perf_counter()
        browser.get(page.resolve().as_uri())
        WebDriverWait(browser, timeout).until(
            lambda b: b.execute_script("return document.body.dataset.ready || null")
        )
        wall = time.perf_counter() - start
        ready_ms = float(browser.execute_script("return document.body.dataset.ready"))
        info = browser.execute_script(
            "const t = window.agemapperBrowser.table;"
            "return {rows: t.rows().count(), shown: t.rows({search: 'applied'}).count()};"
        )
        # responsiveness: a filter (table and plot redrawn), a sort, a text search
        interactions = browser.execute_async_script(
            "const done = arguments[arguments.length - 1], b = window.agemapperBrowser;"
            "const time = async (f) => { const t0 = performance.now(); await f();"
            "  await new Promise(r => requestAnimationFrame(() => setTimeout(r)));"
            "  return performance.now() - t0; };"
            "(async () => {"
            "  const contrast = b.rows[b.rows.length - 1].contrast;"
            "  const filter_ms = await time(() => b.setControls({contrast}));"
            "  const reset_ms = await time(() => b.setControls({contrast: ''}));"
            "  const sort_ms = await time(() => b.table.order([5, 'desc']).draw());"
            "  const search_ms = await time(() => b.table.search('blood').draw());"
            "  done({filter_ms, reset_ms, sort_ms, search_ms});"
            "})();"
        )
        shot = page.with_suffix(".png")
        browser.save_screenshot(str(shot))
        logs = browser.get_log("browser")
    errors = [entry["message"] for entry in logs if entry["level"] == "SEVERE"]
    return {
        "ready_ms": ready_ms,
        "wall_s": wall,
        "rows": info["rows"],
        **interactions,
        "errors": errors,
        "screenshot": str(shot),
    }


def _measure(table, page: Path, args, **select) -> dict:
    """Build one page and (unless --no-browser) load it in Chromium; print and return figures."""
    from agemapper.report.browser import write_browser

    start = time.perf_counter()
    meta = write_browser(table, page, 0.05, "fdr", synthetic=True, **select)
    figures = {
        "loaded": meta["loaded"],
        "note": meta["note"],
        "page_mb": meta["bytes"] / 1e6,
        "build_s": time.perf_counter() - start,
        "page": str(page),
    }
    print(f"  page: {meta['note']}; {figures['page_mb']:.2f} MB; built in "
          f"{figures['build_s']:.1f} s -> {page}")  # fmt: skip
    if args.no_browser:
        return figures
    loaded = load_in_chromium(page, args.chromium, args.chromedriver, timeout=args.timeout)
    figures |= loaded
    print(
        f"  Chromium: ready {loaded['ready_ms'] / 1000:.2f} s after navigation start "
        f"({loaded['wall_s']:.2f} s wall, driver included); {loaded['rows']:,} rows in the "
        f"table; console errors: {len(loaded['errors'])}"
    )
    steps = ("filter_ms", "reset_ms", "sort_ms", "search_ms")
    print(
        "  interactions (ms, until the next frame): "
        + ", ".join(f"{k.removesuffix('_ms')} {loaded[k]:.0f}" for k in steps)
    )
    for error in loaded["errors"]:
        print("  console:", error)
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="6 x 2 x 300 tests, a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="folder for the pages (kept)")
    parser.add_argument(
        "--chromium", default=CHROMIUM, help="default: $AGEMAPPER_CHROMIUM, or on PATH"
    )
    parser.add_argument("--chromedriver", default=DRIVER)
    parser.add_argument("--no-browser", action="store_true", help="build the pages only")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the page that loads every test"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for a page")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    shape = (6, 300) if args.small else (57, 5000)
    out = args.out or Path(tempfile.mkdtemp(prefix="browser-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = study_table(contrasts=shape[0], nidps=shape[1])
    figures = {
        "tests": len(table),
        "significant": int(table.significant_fdr.sum()),
        "generate_s": time.perf_counter() - t0,
    }
    print(
        f"table: {len(table):,} tests ({shape[0]} contrasts x 2 sexes x {shape[1]:,} nIDPs), "
        f"{figures['significant']:,} significant (FDR); generated in {figures['generate_s']:.1f} s"
    )
    if not args.no_browser:
        version = subprocess.run([args.chromium, "--version"], capture_output=True, text=True)
        figures["chromium"] = version.stdout.strip()
        print(figures["chromium"])
    if not args.no_baseline:
        print("baseline: every test on the page")
        figures["baseline"] = _measure(table, out / "all_tests.html", args, max_rows=len(table))
    print("ours: every significant test and a sample of the others (the workflow's page)")
    figures["ours"] = _measure(table, out / "browser.html", args)
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
