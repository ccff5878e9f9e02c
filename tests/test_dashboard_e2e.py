"""End to end in a real headless Chromium: recording -> replay over ZeroMQ -> LiveService (the
real pipeline: network, lattice graph, tracker, events) -> DashboardServer -> browser.
"""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _browser import CLICK_WAIT_S, chromium, click_button, js, severe_console_errors, wait_for

from dashboard.render import event_label
from dashboard.server import DashboardServer
from stemwatch.config import Config
from lab.net import free_tcp_port

pytestmark = pytest.mark.browser

FIND_INPUT = """
const title = arguments[0];
const roots = [];
(function walk(r) { for (const el of r.querySelectorAll('*')) { if (el.shadowRoot) { roots.push(el.shadowRoot); walk(el.shadowRoot); } } })(document);
for (const r of roots) {
  const lab = r.querySelector('label');
  if (lab && lab.textContent.trim().startsWith(title)) { const i = r.querySelector('input'); if (i) { return i; } }
}
return null;
"""


REPO = Path(__file__).resolve().parent.parent
SWITCHING = REPO / "replay_data" / "01_switching_256.swrec"


class Chain:
    """replay thread -> LiveService -> DashboardServer on loopback. The analyzer and the dashboard
    start first; :meth:`start_replay` starts the "microscope" (so a test can be watching)."""

    def __init__(self, source: Path, cfg: Config | None = None, speed: float = 1.0):
        from engine.service import LiveService

        self.source, self.speed = source, speed
        self.cfg = (cfg or Config()).replace(dashboard={"port": 0})
        self.endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        self.stop_replay = threading.Event()
        self.flowing = threading.Event()             # cleared: the "microscope" holds its next frame
        self.flowing.set()
        self.sent: dict[int, float] = {}             # frames sent so far -> wall time of that send
        self.thread = None
        import tempfile

        self.recordings_dir = Path(tempfile.mkdtemp(prefix="sw-takes-"))
        self.service = LiveService(self.cfg, endpoint=self.endpoint, recordings_dir=self.recordings_dir)
        self.dash = DashboardServer(self.cfg.dashboard, controller=self.service)
        self.url = self.dash.start()
        self.service.start()

    def start_replay(self) -> None:
        from streamer.replay import replay

        if self.thread is not None:
            return

        def on_message(messages, frames):
            self.sent.setdefault(frames, time.time())
            self.flowing.wait()

        self.thread = threading.Thread(target=replay, args=(str(self.source), self.endpoint), daemon=True,
                                       kwargs={"speed": self.speed, "loops": 0, "stop": self.stop_replay,
                                               "on_message": on_message})
        self.thread.start()

    def sent_time(self, seq: int) -> float:
        """Wall time when frame ``seq`` (0-based, first loop) left the replayer."""
        return self.sent[seq + 1]

    def close(self):
        self.stop_replay.set()
        self.flowing.set()
        self.service.stop()
        self.dash.stop()
        if self.thread is not None:
            self.thread.join(10)
        import shutil

        shutil.rmtree(self.recordings_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def switching_chain():
    if not SWITCHING.exists():
        pytest.fail(f"{SWITCHING} is missing (replay_data/ ships with the repository)")
    chain = Chain(SWITCHING)
    try:
        yield chain
    finally:
        chain.close()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the tests of the live chain (each test loads a fresh page)."""
    with chromium() as drv:
        yield drv


def _page(drv):
    return js(drv, """
        const img = model('image_source').data.image[0];
        let sum = 0; for (let i = 0; i < img.length; i += 5) { sum += img[i]; }
        return {seq: model('frame_meta').data.seq[0], img_sum: sum, img_len: img.length,
                n_atoms: model('atom_source').data.x.length,
                banner: deep('.banner').map(e => e.textContent).join(' ')};""")


#: the top-most (newest) row of the event table showing ``arguments[0]`` in a cell: [its first cell, the
#: texts of its cells], or null while there is none
FIND_ROW = """
const want = arguments[0];
for (const row of deep('.slick-row')) {
  const cells = [...row.querySelectorAll('.slick-cell')];
  const texts = cells.map(c => c.textContent.trim());
  if (texts.includes(want)) { return [cells[0], texts]; }
}
return null;
"""


def _click_shown(drv, chain, kind, why):
    """Click (a real click) the newest row of a ``kind`` event the page shows; the EventRow the page
    picked, or None to retry. The replay loops, so events keep coming, and on a busy machine the page's
    table lags the analyzer by several events: the row is picked on the page, and the event clicked is
    the key the page sent for it (``event_pick.tags``, set in the click's own handler). A row that moved
    under the pointer between finding and clicking it (the table is newest first) is another event:
    the page shows that one, and the test aims again. ``why`` gets the reason of a retry."""
    found = js(drv, FIND_ROW, event_label(kind))
    if found is None:
        why[:] = ["no row of the kind on the page"]
        return None
    cell, texts = found
    before = js(drv, "return model('event_pick').tags")
    try:
        cell.click()
    except Exception:                  # stale: the grid re-rendered meanwhile
        why[:] = ["the row went stale before the click"]
        return None
    picked = js(drv, "return model('event_pick').tags")
    if not picked or picked == before:           # no new pick (e.g. the row was the selected event)
        why[:] = [f"the click picked nothing new (row {texts})"]
        return None
    row = next((r for r in list(chain.dash.hub.events) if r.key == picked[0]), None)
    if row is None or row.event.kind != kind or (str(row.event.frame), str(row.event.atom_id)) != (texts[1], texts[4]):
        why[:] = [f"the click picked event {picked[0]}, not the row {texts}"]
        return None
    return row


def _jump_to_shown(drv, chain, kind, why):
    """Click the newest ``kind`` row (:func:`_click_shown`) and wait until the server has taken that
    click (the page's ``event_pick.data`` names the clicked event: it is set after the frame or the
    message); then the Event if the page shows the event's own frame (its history index: a later
    replay loop's live frame has the same frame number, never the same index), or None (retry) when
    the frame has left the history meanwhile (each loop restarts the series, and a restarted series
    starts a new history; on a busy machine a loop can end between finding the row and the click)."""
    row = _click_shown(drv, chain, kind, why)
    if row is None:
        return None
    wait_for(lambda: js(drv, "return model('event_pick').data.key[0]") == row.key,
             what="the server to take the click")
    if js(drv, "return model('frame_meta').data.idx[0]") == row.idx:
        return row.event
    if "no longer in the history" not in js(drv, "return deep('.msg').map(e => e.textContent).join(' ')"):
        pytest.fail(f"the page took the click on event {row.key} but shows neither its frame nor word that it is gone")
    why[:] = [f"frame {row.event.frame} of event {row.key} has left the history"]
    return None


def test_replay_shows_frames_alerts_and_jumps_to_the_event(switching_chain, browser, tmp_path):
    """01_switching_256: one Si switches 3 -> 4-fold at frame 8 (scripted in the simulator's truth)."""
    from engine.sim.truth import load_truth

    chain = switching_chain
    switches = [e for e in load_truth(SWITCHING).events if e["kind"] == "si_3_to_4"]
    gt = switches[0]

    def truth_of(ev):
        """The scripted switch an event reports: the movie switches 3 -> 4-fold more than once, and on a
        busy machine the analysis (newest frame only) may miss the first one."""
        return max((e for e in switches if e["frame"] <= ev.frame), key=lambda e: e["frame"], default=gt)

    drv = browser
    drv.get(chain.url)
    wait_for(lambda: js(drv, "return model('frame_meta') !== undefined"), what="the page")
    chain.start_replay()
    # the image and the atoms update while the replay runs
    seen = {}
    deadline = time.time() + 300                     # hang guard only
    t_alert = None
    while time.time() < deadline:
        p = _page(drv)
        if p["seq"] >= 0:
            seen[p["seq"]] = (p["img_sum"], p["n_atoms"])
        if t_alert is None and "Si 3→4-fold" in p["banner"]:
            t_alert = time.time()
        # the alert, and new images on the page (a busy machine may show the alert before a second
        # frame: the replay loops, frames keep coming)
        if t_alert is not None and len({v[0] for v in seen.values()}) >= 2:
            break
        time.sleep(0.03)
    assert t_alert is not None, f"no alert; frames seen {sorted(seen)}"
    # the alert's latency is a speed figure (`stemwatch bench`), not asserted in the default suite;
    # here: the alert comes after the scripted frame was sent, and the image kept updating
    alert_s = t_alert - chain.sent_time(gt["frame"])       # printed below, information only
    assert alert_s >= 0
    assert len(seen) >= 2 and len({v[0] for v in seen.values()}) >= 2    # new images
    assert all(v[1] > 150 for v in seen.values())                        # atoms on each
    row = next(r for r in chain.dash.hub.events if r.event.kind == "si_3_to_4")
    ev = row.event
    assert ev.frame >= gt["frame"]          # (how many frames later depends on what analysis kept up with)
    assert np.hypot(ev.x_A - truth_of(ev)["x_A"], ev.y_A - truth_of(ev)["y_A"]) < 1.5
    print(f"alert {alert_s:.2f} s after the scripted frame left the replayer "
          f"(detected on frame {ev.frame}, truth frame {gt['frame']})")
    # clicking the event shows its frame, with the dopant ringed, while live frames go on
    wait_for(lambda: _page(drv)["seq"] > ev.frame + 2, what="later frames")
    # the operator clicks while the microscope holds still: on a busy machine the page's table lags
    # the analyzer, and a looping replay moves rows under the pointer and sends the frames of the
    # events shown out of the history before the click lands (make test with both cores loaded
    # timed out here, twice in a row, the replay looping on); the page first catches up with the
    # newest event of the kind
    chain.flowing.clear()
    newest = max(r.key for r in list(chain.dash.hub.events) if r.event.kind == "si_3_to_4")
    wait_for(lambda: newest in js(drv, "return Array.from(model('event_source').data.key)"),
             CLICK_WAIT_S, what="the page's event table to catch up")
    why = ["no attempt"]
    try:
        ev = wait_for(lambda: _jump_to_shown(drv, chain, "si_3_to_4", why), CLICK_WAIT_S, what="the event's frame")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last attempt: {why[0]}") from None
    chain.flowing.set()
    t = truth_of(ev)
    assert ev.frame >= t["frame"] and np.hypot(ev.x_A - t["x_A"], ev.y_A - t["y_A"]) < 1.5
    assert _page(drv)["seq"] == ev.frame
    shown_idx = js(drv, "return model('frame_meta').data.idx[0]")
    hl = js(drv, "return model('highlight_source').data")
    ring = [i for i, lab in enumerate(hl["label"]) if f"#{ev.atom_id}" in lab]
    assert ring and np.hypot(hl["x"][ring[0]] - t["x_A"], hl["y"][ring[0]] - t["y_A"]) < 1.5
    assert len(hl["x"]) >= 4                           # the Si and its neighbours are ringed too
    # live frames go on (the page's history grows by 3 frames) and the view stays on the event
    wait_for(lambda: js(drv, "return model('history_slider').end") >= shown_idx + 3, what="newer frames")
    assert _page(drv)["seq"] == ev.frame
    drv.save_screenshot(str(tmp_path / "dashboard_replay_event.png"))
    assert (tmp_path / "dashboard_replay_event.png").stat().st_size > 50_000
    assert not severe_console_errors(drv)


def test_controls_act_on_the_live_service(switching_chain, browser, tmp_path):
    chain = switching_chain
    chain.start_replay()
    svc = chain.service
    drv = browser
    drv.get(chain.url)
    wait_for(lambda: js(drv, "return model('frame_meta').data.seq[0] >= 0"), what="the first frame")
    buttons = lambda: {b.text.strip(): b for b in js(drv, "return deep('button')")}   # noqa: E731
    # pause / resume
    click_button(drv, "Pause analysis")
    wait_for(lambda: svc.paused, what="the service to pause")
    wait_for(lambda: "ANALYSIS PAUSED" in js(drv, "return deep('.status')[0].textContent"),
             what="the paused state on the page")
    # frames keep arriving and are skipped, none analysed: counted in frames, not seconds (a frame
    # being analysed when the pause came finishes first; the loop skips the next one after it)
    skipped = svc.status()["paused_skipped"]
    wait_for(lambda: svc.status()["paused_skipped"] > skipped, what="a frame skipped while paused")
    n_paused, skipped = svc.status()["frames_analysed"], svc.status()["paused_skipped"]
    wait_for(lambda: svc.status()["paused_skipped"] >= skipped + 3, what="frames skipped while paused")
    assert svc.status()["frames_analysed"] == n_paused
    wait_for(lambda: "Resume analysis" in buttons(), what="the resume button")
    click_button(drv, "Resume analysis")
    wait_for(lambda: not svc.paused and svc.status()["frames_analysed"] > n_paused, what="analysis to resume")
    # record under a name of our choice (inside the service's recordings folder), stop, record again:
    # the second take gets a new name, the first is never overwritten
    from streamer.recording import RecordingReader

    box = drv.execute_script(FIND_INPUT, "recording name")
    box.clear()
    box.send_keys("from-dashboard\n")
    wait_for(lambda: any(t.rec_path.value == "from-dashboard" for t in chain.dash.sessions),
             what="the name on the server")
    takes = []
    for out in (chain.recordings_dir / "from-dashboard.swrec", chain.recordings_dir / "from-dashboard-2.swrec"):
        wait_for(lambda: "● Record" in buttons(), what="the record button")
        click_button(drv, "● Record")
        wait_for(lambda: svc.recorder.recording and out.exists(), what="the recording to start")
        wait_for(lambda: svc.recorder.written >= 3, what="frames in the recording")
        wait_for(lambda: "■ Stop recording" in buttons(), what="the stop button")
        click_button(drv, "■ Stop recording")
        wait_for(lambda: not svc.recorder.recording, what="the recording to stop")
        takes.append(out)
    for out in takes:
        assert len(list(RecordingReader(out))) >= 3
    # a path is refused: nothing is written outside the recordings folder
    box = drv.execute_script(FIND_INPUT, "recording name")
    box.clear()
    box.send_keys(str(tmp_path / "elsewhere.swrec") + "\n")
    # the server has the new text before Record is clicked (a round trip, not a time window)
    wait_for(lambda: any(t.rec_path.value == str(tmp_path / "elsewhere.swrec") for t in chain.dash.sessions),
             what="the path on the server")
    click_button(drv, "● Record")
    wait_for(lambda: "without a folder" in js(drv, "return deep('.msg').map(e => e.textContent).join(' ')"),
             what="the refusal")
    assert not svc.recorder.recording and not (tmp_path / "elsewhere.swrec").exists()
    # thresholds
    for title, value in (("of n frames", "4"), ("debounce k", "3")):
        box = drv.execute_script(FIND_INPUT, title)
        box.clear()
        box.send_keys(value + "\n")
    wait_for(lambda: any((t.k.value, t.n.value) == (3, 4) for t in chain.dash.sessions),
             what="the thresholds on the server")
    click_button(drv, "Apply thresholds")
    wait_for(lambda: tuple(svc.cfg.events.k_of_n) == (3, 4), what="the new debounce setting")
    wait_for(lambda: "done" in js(drv, "return deep('.msg').map(e => e.textContent).join(' ')"),
             what="the confirmation line")
    assert not severe_console_errors(drv)
