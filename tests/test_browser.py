"""The association browser in a real headless Chromium: small, and at study scale.

The demo's own browser page is checked the same way in tests/test_workflow.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import browser_checks
from agemapper.report.browser import write_browser
from conftest import load_benchmark


def test_browser_loads_sorts_and_filters(tmp_path):
    browser_checks.require()
    table = load_benchmark("browser").study_table(contrasts=4, nidps=200, seed=1)
    meta = write_browser(table, tmp_path / "browser.html", 0.05, "fdr", synthetic=True)
    assert meta["loaded"] == len(table) == 4 * 2 * 200
    seen = browser_checks.check_browser_page(tmp_path / "browser.html", tmp_path / "shot.png")
    assert seen["rows"] == len(table) and seen["clicked"] is not None
    assert (tmp_path / "shot.png").read_bytes()[:4] == b"\x89PNG"


def test_browser_at_study_scale_570000_tests(tmp_path):
    """57 contrasts x 2 sexes x 5,000 nIDPs: every significant test and a sample of the rest."""
    browser_checks.require()
    table = load_benchmark("browser").study_table()
    assert len(table) == 570_000
    meta = write_browser(table, tmp_path / "browser.html", 0.05, "bonferroni")
    assert meta["significant"] == int(table.significant_bonferroni.sum()) > 0
    assert meta["loaded"] <= meta["significant"] + 20_000
    assert meta["bytes"] < 8e6
    seen = browser_checks.check_browser_page(tmp_path / "browser.html", timeout=180)
    assert seen["rows"] == meta["loaded"]
    assert seen["ready_ms"] < 30_000  # measured 2-3 s on a loaded 2-core machine


def test_table_pages_sort_and_filter(tmp_path):
    browser_checks.require()
    from agemapper.report import pages

    frame = pd.DataFrame(
        {
            "contrast": ["swi", "T1", "vbm", "swi", "T1"],
            "sex": ["female", "male", "female", "male", "female"],
            "mae": [3.1, 2.5, np.nan, 2.9, 2.7],
            "n": [120, 118, 119, 117, 116],
        }
    )
    pages.write_table_page(tmp_path / "t.html", frame, "A table", synthetic=True)
    seen = browser_checks.check_table_page(tmp_path / "t.html")
    assert seen == {"rows": 5, "shown": 2}  # "swi"
