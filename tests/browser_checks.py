"""Checks of the association browser in a real headless Chromium (Debian's chromium and
chromedriver, driven by Selenium; nothing is downloaded).

Without Chromium the tests that need it skip, unless ``AGEMAPPER_REQUIRE_BROWSER`` is set
(CI sets it, and installs Chromium), in which case they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM = os.environ.get("AGEMAPPER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def missing() -> str | None:
    """Why the browser cannot run here (None when it can)."""
    for path in (CHROMIUM, DRIVER):
        if not Path(path).exists():
            return f"{path} not found (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


def require() -> None:
    """Skip the calling test without a browser, or fail if one is required."""
    import pytest  # here, so that benchmarks/browser.py can use chromium() without pytest

    why = missing()
    if why is None:
        return
    if os.environ.get("AGEMAPPER_REQUIRE_BROWSER"):
        pytest.fail(f"AGEMAPPER_REQUIRE_BROWSER is set but {why}")
    pytest.skip(why)


@contextlib.contextmanager
def chromium(binary: str = CHROMIUM, driver_path: str = DRIVER):
    """A headless Chromium with a fresh profile, its console log kept (the tests' browser, and
    benchmarks/browser.py's, which may name another ``binary`` and chromedriver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="agemapper-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def _info(driver) -> tuple[int, int]:
    """(rows shown after filtering, rows in all) of the browser's table."""
    return driver.execute_script(
        "const t = window.agemapperBrowser.table;"
        "return [t.rows({search: 'applied'}).count(), t.rows().count()];"
    )


def _column_values(driver, title: str) -> list[str]:
    """The texts of a column on the table's current page."""
    return driver.execute_script(
        "const heads = [...document.querySelectorAll('#tests thead th')];"
        "const k = heads.findIndex(h => h.textContent.trim() === arguments[0]);"
        "return [...document.querySelectorAll('#tests tbody tr')]"
        "  .map(tr => tr.cells[k] ? tr.cells[k].textContent.trim() : '');",
        title,
    )


_ITEM_CENTRE = """
// centre (CSS pixels, relative to the canvas) of the first mark item whose datum has the key
// (and, if given, a true ``must`` field: a large point rather than a tiny one)
const view = window.agemapperBrowser[arguments[0]], key = arguments[1], must = arguments[2];
function find(item, x, y) {
  if (item.datum && item.datum[key] !== undefined && item.bounds && item.mark.marktype !== 'group'
      && (!must || item.datum[must])) {
    const b = item.bounds;
    return {x: x + (b.x1 + b.x2) / 2, y: y + (b.y1 + b.y2) / 2, datum: item.datum};
  }
  const dx = x + (item.mark && item.mark.marktype === 'group' ? item.x || 0 : 0);
  const dy = y + (item.mark && item.mark.marktype === 'group' ? item.y || 0 : 0);
  for (const child of item.items || []) {
    const hit = find(child, dx, dy);
    if (hit) return hit;
  }
  return null;
}
const [ox, oy] = view.origin();
const hit = find(view.scenegraph().root, ox, oy);
return hit && {x: hit.x, y: hit.y, datum: JSON.parse(JSON.stringify(hit.datum))};
"""


def _click_item(driver, which: str, key: str, container: str, done, must: str = "") -> dict:
    """Click the first mark of a Vega view whose datum has ``key`` (and a true ``must``) until
    ``done(driver)``; return that datum. The mark's centre comes from its scenegraph bounds;
    a few pixels around it are tried too (a small point drawn at the edge of its group)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    hit = driver.execute_script(_ITEM_CENTRE, which, key, must)
    assert hit, f"no mark with {key!r} in the {which} view"
    canvas = driver.find_element(By.CSS_SELECTOR, f"{container} canvas")
    for dx, dy in [(0, 0), (3, 3), (5, 5), (-3, -3), (3, -3), (-3, 3), (6, 2), (2, 6)]:
        driver.execute_script(  # the target in the middle of the window
            "const r = arguments[0].getBoundingClientRect();"
            "window.scrollBy(0, r.top + arguments[1] - window.innerHeight / 2);",
            canvas,
            hit["y"] + dy,
        )
        left, top = driver.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top];", canvas
        )
        actions = ActionBuilder(driver)
        actions.pointer_action.move_to_location(
            round(left + hit["x"] + dx), round(top + hit["y"] + dy)
        ).click()
        actions.perform()
        if done(driver):
            return hit["datum"]
    raise AssertionError(f"a click on {hit} in the {which} view did nothing")


def _click(driver, element) -> None:
    """Click an element in the middle of the window (not under the sticky filter bar)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def _number(text: str) -> float:
    return float(text) if text else float("inf")


def check_browser_page(page: Path, screenshot: Path | None = None, timeout: float = 120) -> dict:
    """Open the browser page and use it as a person would; returns what was measured.

    The page loads (table and both charts drawn) without a console error; clicking the ``r``
    header sorts the table (ascending, then descending); choosing a contrast narrows it to that
    contrast; typing in the search box narrows it further; clicking a cell of the summary
    filters the table to that contrast and category; a click on a point of the Manhattan plot
    finds its nIDP. Console errors are checked once more at the end.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with chromium() as driver:
        start = time.perf_counter()
        driver.get(Path(page).resolve().as_uri())
        WebDriverWait(driver, timeout).until(
            lambda d: d.execute_script("return document.body.dataset.ready || null")
        )
        load_s = time.perf_counter() - start
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"console errors while loading: {errors}"
        shown, total = _info(driver)
        assert shown == total > 0

        header = driver.find_element(
            By.XPATH, "//table[@id='tests']/thead//th[normalize-space()='r']"
        )
        order = (  # the direction the table is sorted by this header's column, if it is
            "const t = window.agemapperBrowser.table, o = t.order();"
            "return o.length === 1 && o[0][0] === t.column(arguments[0]).index() ? o[0][1] : '';"
        )

        def sorted_as(direction):  # the order says so, and the rows shown are drawn so
            def check(d):
                values = [_number(v) for v in _column_values(d, "r")]
                drawn = values == sorted(values, reverse=direction == "desc")
                return drawn and d.execute_script(order, header) == direction and values

            return check

        _click(driver, header)
        up = WebDriverWait(driver, 20).until(sorted_as("asc"))
        time.sleep(0.5)  # a second click at once reads as a double click
        _click(driver, header)
        down = WebDriverWait(driver, 20).until(sorted_as("desc"))
        assert len(up) > 1 and up[0] <= down[0]

        contrasts = [o.get_attribute("value") for o in driver.find_elements(
            By.CSS_SELECTOR, "#f-contrast option")][1:]  # fmt: skip
        Select(driver.find_element(By.ID, "f-contrast")).select_by_value(contrasts[-1])
        narrowed, _ = _info(driver)
        assert 0 < narrowed < total
        assert set(_column_values(driver, "contrast")) == {contrasts[-1]}
        word = driver.execute_script(
            "const t = window.agemapperBrowser.table;"
            "return t.rows({search: 'applied'}).data()[0].title.split(' ')[0];"
        )
        box = driver.find_element(By.ID, "f-text")
        box.send_keys(word)
        searched, _ = _info(driver)
        assert 0 < searched <= narrowed
        _click(driver, driver.find_element(By.ID, "f-reset"))
        assert _info(driver) == [total, total]

        summary_cells = driver.execute_script(
            "return window.agemapperBrowser.rows.filter(r => r.significant).length"
        )
        clicked = None
        if summary_cells:
            clicked = _click_item(
                driver,
                "summary",
                "fields",
                "#summary-chart",
                lambda d: d.find_element(By.ID, "f-category").get_attribute("value"),
            )
            cell_rows, _ = _info(driver)
            assert 0 < cell_rows < total or len(set(_column_values(driver, "contrast"))) == 1
            assert set(_column_values(driver, "contrast")) == {clicked["contrast"]}
            assert set(_column_values(driver, "category")) == {clicked["category"]}
            _click(driver, driver.find_element(By.ID, "f-reset"))
            point = _click_item(
                driver,
                "manhattan",
                "nidp",
                "#manhattan",
                lambda d: d.find_element(By.ID, "f-text").get_attribute("value"),
                must="significant",
            )
            assert driver.find_element(By.ID, "f-text").get_attribute("value") == point["nidp"]
            found = _column_values(driver, "nIDP")
            assert found and all(point["nidp"] in text for text in found)

        if screenshot:
            _click(driver, driver.find_element(By.ID, "f-reset"))
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(screenshot))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"console errors: {errors}"
        ready_ms = float(driver.execute_script("return document.body.dataset.ready"))
    return {"load_s": load_s, "ready_ms": ready_ms, "rows": total, "clicked": clicked}


def check_table_page(page: Path) -> dict:
    """A table page (agemapper.report.pages): loads without a console error, the first numeric
    column sorts both ways on a click, typing in the filter box narrows the rows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as driver:
        driver.get(Path(page).resolve().as_uri())
        rows = driver.execute_script(
            "return document.querySelectorAll('table.data tbody tr').length"
        )
        k = driver.execute_script(
            "return [...document.querySelectorAll('table.data')[0].tHead.rows[0].cells]"
            ".findIndex(th => th.dataset.type === 'num')"
        )
        values = (
            "return [...document.querySelectorAll('table.data')[0].tBodies[0].rows]"
            ".map(r => r.cells[arguments[0]].dataset.v).filter(v => v !== '').map(Number)"
        )
        header = driver.find_elements(By.CSS_SELECTOR, "table.data th")[k]
        _click(driver, header)
        up = driver.execute_script(values, k)
        _click(driver, header)
        down = driver.execute_script(values, k)
        assert up == sorted(up) and down == sorted(down, reverse=True) and len(up) > 1
        box = driver.find_element(By.CSS_SELECTOR, "input.filter")
        first = driver.execute_script(
            "return document.querySelector('table.data tbody tr').cells[0].textContent"
        )
        box.send_keys(first)
        WebDriverWait(driver, 10).until(
            lambda d: "of" in d.find_element(By.CSS_SELECTOR, "span.count").text
        )
        shown = driver.execute_script(
            "return [...document.querySelectorAll('table.data tbody tr')].filter(r => !r.hidden)"
            ".length"
        )
        text = driver.find_element(By.CSS_SELECTOR, "span.count").text
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"console errors: {errors}"
    assert 0 < shown <= rows and text == f"{shown} of {rows} rows shown"
    return {"rows": rows, "shown": shown}
