"""Headless Chromium for the dashboard tests (Debian ``chromium`` + ``chromedriver``, selenium).

When ``CI=true`` the browser tests must run: a missing browser is a failure, not a skip. Outside
CI they skip with the reason when chromium or chromedriver is not installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--autoplay-policy=no-user-gesture-required")

#: the longest one WebDriver command (a click, a script, a page load) may take: a hang guard
COMMAND_TIMEOUT_S = 600

#: JavaScript prelude: ``model(name)`` finds a Bokeh model of the first document by name;
#: ``deep(selector)`` queries through every shadow root (Bokeh 3 renders widgets in shadow DOM).
JS = """
const doc = Bokeh.documents[0];
const models = doc ? [...(doc.all_models || doc._all_models.values())] : [];
const model = (n) => models.find(m => { try { return m.name === n; } catch (e) { return false; } });
const deep = (sel, root = document, out = []) => {
  out.push(...root.querySelectorAll(sel));
  for (const el of root.querySelectorAll('*')) { if (el.shadowRoot) { deep(sel, el.shadowRoot, out); } }
  return out;
};
"""


def _first(paths, name):
    found = shutil.which(name)
    return found or next((p for p in paths if os.path.exists(p)), None)


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver) paths; fails under CI=true and skips otherwise when missing."""
    chrome = _first(CHROMIUM_CANDIDATES, "chromium")
    driver = _first(DRIVER_CANDIDATES, "chromedriver")
    if chrome and driver:
        return chrome, driver
    missing = ", ".join(n for n, p in (("chromium", chrome), ("chromedriver", driver)) if not p)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {missing} is not installed: the browser tests must run in CI "
                    "(.ci/run installs chromium and chromium-driver)")
    pytest.skip(f"{missing} not installed (apt-get install chromium chromium-driver); "
                "these tests always run when CI=true")


@contextmanager
def chromium(width: int = 1640, height: int = 1000):
    """A headless Chromium with a fresh profile and a fixed viewport; quits on exit."""
    chrome, driver_path = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="stemwatch-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = None
    for attempt in range(3):          # chromedriver gives up on a browser that starts slowly (busy machine)
        try:
            drv = webdriver.Chrome(service=Service(driver_path), options=opts)
            break
        except Exception:
            if attempt == 2:
                raise
            shutil.rmtree(profile, ignore_errors=True)
            profile = tempfile.mkdtemp(prefix="stemwatch-chromium-")
            opts.arguments[:] = [a for a in opts.arguments if not a.startswith("--user-data-dir=")]
            opts.add_argument(f"--user-data-dir={profile}")
    try:
        # page loads, scripts and each WebDriver command get generous limits: hang guards, not speed
        # claims (on a busy machine one native click took over selenium's default 120 s while the page
        # did its first layout, and failed the test)
        drv.command_executor.client_config.timeout = COMMAND_TIMEOUT_S
        drv.set_page_load_timeout(COMMAND_TIMEOUT_S)
        drv.set_script_timeout(COMMAND_TIMEOUT_S)
        drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def js(drv, code: str, *args):
    """Run ``code`` (a function body that may use model() and deep()) in the page."""
    return drv.execute_script(JS + code, *args)


#: every wait is at least this long: timeouts here are hang guards, never speed claims (the default
#: suite must pass on a busy machine; speed is measured by `stemwatch bench`)
MIN_WAIT_S = 60.0


def wait_for(fn, timeout_s: float = 10.0, period_s: float = 0.05, what: str = "condition"):
    """Poll ``fn()`` until it returns something truthy; returns it, or fails after
    ``max(timeout_s, MIN_WAIT_S)`` and at least 3 tries (a hang guard, not a performance assertion:
    one slow try on a busy machine must not use up the time of the others)."""
    timeout_s = max(float(timeout_s), MIN_WAIT_S)
    deadline = time.time() + timeout_s
    last_exc = None
    tries = 0
    while time.time() < deadline or tries < 3:
        tries += 1
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # the page may still be loading
            last_exc = exc
        time.sleep(period_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}"
                         + (f" (last error: {last_exc})" if last_exc else ""))


def severe_console_errors(drv) -> list[str]:
    """Browser console messages of level SEVERE (JavaScript errors, failed loads)."""
    return [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]


#: a click on a page that re-renders while data arrives may go stale many times in a row on a busy
#: machine (each find and each click a slow round trip): its hang guard is longer
CLICK_WAIT_S = 300.0


def click_found(drv, finder: str, *args, what: str = "the element") -> None:
    """Click (a real click) the element the JavaScript ``finder`` (a function body using ``arguments``,
    model() and deep(); null when not there yet) returns. Found and clicked in one round trip and
    retried until the click lands (the page re-renders while data arrives, so an element can go stale
    between finding and clicking it): a hang guard of :data:`MIN_WAIT_S`, never a time window."""
    last = ["not found"]

    def attempt():
        el = js(drv, finder, *args)
        if el is None:
            last[0] = "not found"
            return False
        try:
            el.click()
            return True
        except Exception as exc:       # stale, or covered while the layout settles: find it again
            last[0] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return False

    try:
        wait_for(attempt, timeout_s=CLICK_WAIT_S, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last attempt: {last[0]}") from None


def click_cell(drv, text: str, what: str = "the table row", row_has: str | None = None) -> None:
    """Click (a real click) the first table cell showing ``text`` -- in a row that also shows
    ``row_has`` when given (a frame number can also be another row's track id). The table is
    re-rendered while data arrives, so any cell may go stale between finding and clicking it:
    retried until it works (a hang guard of :data:`MIN_WAIT_S`)."""
    click_found(drv, "const [text, has] = arguments;"
                     "for (const row of deep('.slick-row')) {"
                     "  const cells = [...row.querySelectorAll('.slick-cell')];"
                     "  if (has !== null && !cells.some(c => c.textContent.includes(has))) continue;"
                     "  const c = cells.find(c => c.textContent.trim() === text); if (c) return c; }"
                     "return null;", text, row_has, what=what)


def click_button(drv, label: str) -> None:
    """Click (a real click) the button labelled ``label``, found in one round trip and retried while
    the page re-renders it (a button that relabels itself goes stale between finding and clicking)."""
    click_found(drv, "const [t] = arguments; return deep('button').find(b => b.textContent.trim() === t) || null;",
                label, what=f"the {label!r} button")
