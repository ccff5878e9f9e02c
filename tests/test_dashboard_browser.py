"""The operator screen in a real headless Chromium, fed with plain-data FrameResults.

(The end-to-end run with the simulated microscope, the live service and replay is in
test_dashboard_e2e.py.)
"""

import threading
import time

import pytest

from _browser import chromium, click_cell, click_found, js, severe_console_errors, wait_for
from _dashboard_data import Lattice
from dashboard.server import DashboardServer
from stemwatch.config import DashboardConfig

pytestmark = pytest.mark.browser


class Feeder:
    """Publishes a drifting lattice at ``period_s`` from its own thread (like the analysis thread)."""

    def __init__(self, dash: DashboardServer, period_s: float = 0.1):
        self.dash = dash
        self.period_s = period_s
        self.lat = Lattice(shape=(256, 256), pixel_size_A=0.1, n_si=3, seed=3, series="browser-test")
        self.seq = 0
        self._event = None
        self._event_done = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            events = []
            if self._event is not None:
                k = self._event
                self._event = None
                events = [self.lat.switch(k, self.seq)]
                self.event_seq, self.event_t = self.seq, time.time()
                self.event_obj = events[0]
            drift = (0.02 * self.seq, 0.01 * self.seq)
            res = self.lat.result(self.seq, events=events, drift_A=drift)
            self.dash.publish(res, {"endpoint": "tcp://127.0.0.1:5555", "backend": "ONNX Runtime CPU",
                                    "data_fps": 1 / self.period_s, "analysed_fps": 1 / self.period_s})
            if events:
                self._event_done.set()
            self.seq += 1
            time.sleep(self.period_s)

    def script_event(self, dopant: int):
        """Make dopant ``dopant`` switch in the next frame; returns (seq, publish time, Event)."""
        self._event_done.clear()
        self._event = dopant
        assert self._event_done.wait(120), "the feeder thread published no frame in 120 s"   # a hang guard
        return self.event_seq, self.event_t, self.event_obj

    def stop(self):
        self._stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def live():
    dash = DashboardServer(DashboardConfig(port=0))
    dash.start()
    feeder = Feeder(dash)
    feeder.thread.start()
    with chromium() as drv:
        drv.get(dash.url)
        wait_for(lambda: js(drv, "return model('frame_meta').data.seq[0] >= 0"), what="the first frame")
        yield dash, feeder, drv
    feeder.stop()
    dash.stop()


def _frame(drv):
    return js(drv, """
        const img = model('image_source').data.image[0];
        let sum = 0; for (let i = 0; i < img.length; i += 7) { sum += img[i]; }
        const a = model('atom_source').data;
        return {seq: model('frame_meta').data.seq[0], idx: model('frame_meta').data.idx[0],
                img_sum: sum, img_len: img.length, n_atoms: a.x.length, x0: a.x[0], y0: a.y[0],
                banner: deep('.banner').map(e => e.textContent).join(' '),
                status: deep('.status').map(e => e.textContent).join(' ')};""")


def _watch_frames(drv):
    """From now on, the page records the frame's seq and its first atom's x each time ``frame_meta`` changes. The
    server sends a frame as several messages, ``frame_meta`` last, so at that moment the atoms are the same frame's;
    a poll between two of them can read the next frame's atoms with the last one's seq (seen with both cores busy)."""
    js(drv, """
        const m = model('frame_meta'), a = model('atom_source');
        window.__frames = [];
        m.connect(m.properties.data.change, () => window.__frames.push({seq: m.data.seq[0], x0: a.data.x[0]}));
        return true;""")


def test_live_frame_and_atoms_update(live):
    dash, feeder, drv = live
    _watch_frames(drv)
    first = _frame(drv)
    assert first["img_len"] == 256 * 256 and first["n_atoms"] == len(feeder.lat.xy_A)
    later = wait_for(lambda: (f := _frame(drv))["seq"] >= first["seq"] + 5 and f, what="5 newer frames")
    assert later["img_sum"] != first["img_sum"]                  # a new image, not the same one again
    # the atoms drift with the frames: read where each frame was complete
    seen = wait_for(lambda: (f := js(drv, "return window.__frames;")) and f[-1]["seq"] >= f[0]["seq"] + 5 and f,
                    what="5 newer complete frames")
    a, b = seen[0], seen[-1]
    assert b["x0"] - a["x0"] == pytest.approx(0.02 * (b["seq"] - a["seq"]), abs=1e-3), seen     # drift
    assert "LIVE" in later["status"] and "ONNX Runtime CPU" in later["status"]
    assert "display" in later["status"]
    tab = next(iter(dash.sessions))
    assert tab.ack_times, "the browser acknowledged no frame"
    assert not severe_console_errors(drv)


def test_alert_banner_and_click_jumps_to_the_frame(live, tmp_path):
    # how fast the alert appears is measured by `stemwatch bench` (dashboard), not asserted here:
    # the default suite must pass on a busy machine
    dash, feeder, drv = live
    seq, t_pub, ev = feeder.script_event(1)
    banner = wait_for(lambda: (b := _frame(drv)["banner"]) and f"frame {seq}" in b and b,
                      what="the alert banner")
    alert_s = time.time() - t_pub
    assert "Si 3→4-fold" in banner and f"#{ev.atom_id}" in banner
    wait_for(lambda: _frame(drv)["seq"] > seq + 3, what="live frames after the event")
    click_cell(drv, str(seq), what="the event row")              # a real click on the table row
    shown = wait_for(lambda: (f := _frame(drv))["seq"] == seq and f, what="the event frame")
    assert shown["idx"] == next(r.idx for r in dash.hub.events if r.event.frame == seq)
    hl = js(drv, "return model('highlight_source').data")
    assert any(f"#{ev.atom_id}" in lab for lab in hl["label"])
    assert js(drv, "return deep('button').some(b => b.textContent.includes('Back to live'))")
    # stays on the event while data keeps coming: the history grows by 3 frames in the page meanwhile
    wait_for(lambda: js(drv, "return model('history_slider').end") >= shown["idx"] + 3, what="newer frames")
    assert _frame(drv)["seq"] == seq
    # hover the dopant: its track id and details in the tooltip
    from selenium.webdriver.common.action_chains import ActionChains

    x, y = js(drv, """const v = Bokeh.index.find_one(model('frame_plot')); const a = model('atom_source').data;
        const i = a.tid.indexOf(arguments[0]); const r = v.canvas_view.el.getBoundingClientRect();
        return [r.left + v.frame.x_scale.compute(a.x[i]), r.top + v.frame.y_scale.compute(a.y[i])];""", ev.atom_id)

    def hover():            # moved onto the dopant again until the tooltip shows (a busy page may miss a move)
        for dx in (3, 0):
            act = ActionChains(drv)
            act.w3c_actions.pointer_action.move_to_location(int(x) + dx, int(y))
            act.perform()
        return " ".join(js(drv, "return deep('.bk-tooltip-content').map(e => e.textContent)"))

    tip = wait_for(hover, what="the hover tooltip")
    assert f"track: {ev.atom_id}" in tip and "species: Si" in tip and "bonds: 4" in tip and "Si1C4" in tip
    drv.save_screenshot(str(tmp_path / "dashboard_event.png"))
    assert (tmp_path / "dashboard_event.png").stat().st_size > 50_000
    # back to live
    click_found(drv, "return deep('button').find(b => b.textContent.includes('Back to live')) || null;",
                what="the 'Back to live' button")
    wait_for(lambda: _frame(drv)["seq"] > seq + 5, what="live frames again")
    print(f"alert shown {alert_s:.2f} s after publish (information only)")


def test_second_tab_and_display_options(live):
    dash, feeder, drv = live
    before = js(drv, "return model('image_mapper').palette[20]")
    click_found(drv, "return deep('input[type=checkbox]')"
                     ".find(i => i.nextSibling && i.nextSibling.textContent.trim() === 'log') || null;",
                what="the 'log' checkbox")
    after = wait_for(lambda: (p := js(drv, "return model('image_mapper').palette[20]")) != before and p,
                     what="the log palette")
    assert int(after[1:3], 16) > int(before[1:3], 16)            # dark values brightened (gray ramp)
    main = drv.current_window_handle
    drv.switch_to.new_window("tab")
    drv.get(dash.url)
    wait_for(lambda: js(drv, "return model('frame_meta').data.seq[0] >= 0"), what="second tab frame")
    s0 = _frame(drv)["seq"]
    wait_for(lambda: _frame(drv)["seq"] > s0 + 2, what="second tab updates")
    assert len(dash.sessions) >= 2
    assert all(t.pushes > 1 for t in dash.sessions)
    drv.close()
    drv.switch_to.window(main)


def test_missing_browser_fails_under_ci_and_skips_otherwise(monkeypatch):
    import _browser

    monkeypatch.setattr(_browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(_browser.os.path, "exists", lambda p: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        _browser.browser_paths()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium, chromedriver not installed"):
        _browser.browser_paths()
