"""Issue 15 criterion 8: the operator screen at 1280x800 and 1920x1080 in a real headless Chromium:
no horizontal scroll bar, and the image, the banner, the event log and the controls are inside the
viewport (reachable by vertical scrolling, never cut off or pushed off to the side)."""

import os

import pytest

from _browser import chromium, js, wait_for
from test_dashboard_browser import Feeder

from dashboard.server import DashboardServer
from stemwatch.config import DashboardConfig

pytestmark = pytest.mark.browser

#: what must be on screen: (description, JS expression giving the element)
PARTS = {
    "image": "Bokeh.index.find_one(model('frame_plot')).el",
    "banner": "deep('.banner')[0]",
    "event log": "Bokeh.index.find_one(model('event_table')).el",
    "acknowledge": "Bokeh.index.find_one(model('acknowledge')).el",
    "pause": "Bokeh.index.find_one(model('pause')).el",
    "record": "Bokeh.index.find_one(model('record')).el",
    "apply thresholds": "Bokeh.index.find_one(model('apply')).el",
    "history slider": "Bokeh.index.find_one(model('history_slider')).el",
    "status": "Bokeh.index.find_one(model('status')).el",
}


@pytest.fixture(scope="module")
def feed():
    """One dashboard and one Chromium for both screen sizes (a browser start is the test's main cost).
    Frames at 2 a second (the layout does not depend on the rate; at the operator screen's 10 a second
    the server and the browser spent the test redrawing the image)."""
    dash = DashboardServer(DashboardConfig(port=0))
    dash.start()
    feeder = Feeder(dash, period_s=0.5)
    feeder.thread.start()
    with chromium() as drv:
        yield dash, feeder, drv
    feeder.stop()
    dash.stop()


def _screen(drv, w: int, h: int) -> None:
    """The window and the viewport at ``w`` x ``h`` (what chromium(w, h) sets at start)."""
    drv.set_window_size(w, h)
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": False})


def _rect(drv, expr):
    return js(drv, f"""const el = {expr}; el.scrollIntoView({{block: 'nearest', inline: 'nearest'}});
        const r = el.getBoundingClientRect();
        return {{left: r.left, right: r.right, top: r.top, bottom: r.bottom, w: r.width, h: r.height,
                 vw: document.documentElement.clientWidth, vh: document.documentElement.clientHeight}};""")


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_layout_fits_the_screen(feed, size, tmp_path):
    dash, feeder, drv = feed
    w, h = size
    _screen(drv, w, h)
    drv.get(dash.url)                            # a fresh page at this size
    wait_for(lambda: js(drv, "return model('frame_meta').data.seq[0] >= 0"), 60, what="the first frame")
    feeder.script_event(0)
    wait_for(lambda: js(drv, "return deep('.banner.alert').length > 0"), 60, what="the alert banner")
    wait_for(lambda: js(drv, "return deep('.slick-row').length > 0"), 60, what="an event log row")
    no_hscroll = js(drv, "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    widths = js(drv, "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert no_hscroll, f"horizontal scroll bar at {w}x{h}: {widths}"
    for name, expr in PARTS.items():
        r = _rect(drv, expr)
        assert r["w"] > 0 and r["h"] > 0, (name, r)
        assert r["left"] >= 0 and r["right"] <= r["vw"] + 0.5, f"{name} is cut off at the side at {w}x{h}: {r}"
        assert r["top"] >= -0.5 and r["bottom"] <= r["vh"] + 0.5, f"{name} does not fit the screen at {w}x{h}: {r}"
    js(drv, "window.scrollTo(0, 0)")
    # the most important parts need no scrolling at all on the larger screen
    if (w, h) == (1920, 1080):
        for name in ("image", "banner", "event log", "pause", "acknowledge"):
            r = js(drv, f"const r = ({PARTS[name]}).getBoundingClientRect(); return [r.top, r.bottom];")
            assert r[1] <= h, f"{name} below the fold at 1920x1080: {r}"
    shot = tmp_path / f"dashboard_{w}x{h}.png"
    drv.save_screenshot(str(shot))
    assert shot.stat().st_size > 30_000
    keep = os.environ.get("STEMWATCH_SCREENSHOT_DIR")
    if keep:
        drv.save_screenshot(os.path.join(keep, shot.name))
