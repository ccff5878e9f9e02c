"""End to end in a real headless Chromium: recording -> replay over ZeroMQ -> LiveService (the
real pipeline: network, lattice graph, tracker, events) -> DashboardServer -> browser.
"""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _browser import chromium, js, severe_console_errors, wait_for
from _dashboard_data import Lattice
from dashboard.server import DashboardServer
from stemwatch.config import Config

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


def _synthetic_recording(path: Path, n_frames: int = 40, frame_time_s: float = 0.2) -> Path:
    """A small recording of rendered lattice frames (protocol messages written as received)."""
    from streamer.protocol import encode_end, encode_frame, encode_start
    from streamer.recording import RecordingWriter

    lat = Lattice(shape=(256, 256), pixel_size_A=0.1, n_si=3, seed=5)
    t0 = time.time()
    with RecordingWriter(path) as w:
        w.write(encode_start("e2e-synthetic", (256, 256), "float32", 0.1, 1e-6, frame_time_s, {}), t0)
        for i in range(n_frames):
            img = lat.render(lat.xy_A / 0.1 + np.array([0.02 * i, 0.0]), i).astype(np.float32)
            w.write(encode_frame("e2e-synthetic", i, t0 + frame_time_s * i, img, 0.1), t0 + frame_time_s * i)
        w.write(encode_end("e2e-synthetic", n_frames), t0 + frame_time_s * n_frames)
    return path


class Chain:
    """replay thread -> LiveService -> DashboardServer, all on loopback, stopped in reverse."""

    def __init__(self, source: Path, cfg: Config | None = None, speed: float = 1.0):
        from engine.service import LiveService
        from streamer.replay import replay

        self.cfg = (cfg or Config()).replace(dashboard={"port": 0})
        self.stop_replay = threading.Event()
        bound = threading.Event()
        self.endpoint = None
        self.sent: list[tuple[int, float]] = []      # (frames sent so far, time)

        def on_bound(ep):
            self.endpoint = ep
            bound.set()

        def on_message(messages, frames):
            if not self.sent or self.sent[-1][0] != frames:
                self.sent.append((frames, time.time()))

        self.thread = threading.Thread(target=replay, args=(str(source), "tcp://127.0.0.1:*"), daemon=True,
                                       kwargs={"speed": speed, "loops": 0, "stop": self.stop_replay,
                                               "on_bound": on_bound, "on_message": on_message})
        self.thread.start()
        assert bound.wait(10)
        self.service = LiveService(self.cfg, endpoint=self.endpoint)
        self.dash = DashboardServer(self.cfg.dashboard, controller=self.service)
        self.url = self.dash.start()
        self.service.start()

    def close(self):
        self.stop_replay.set()
        self.service.stop()
        self.dash.stop()
        self.thread.join(10)


@pytest.fixture(scope="module")
def synthetic_chain(tmp_path_factory):
    rec = _synthetic_recording(tmp_path_factory.mktemp("e2e") / "synthetic.swrec")
    chain = Chain(rec)
    try:
        yield chain
    finally:
        chain.close()


def test_controls_act_on_the_live_service(synthetic_chain, tmp_path):
    chain = synthetic_chain
    svc = chain.service
    with chromium() as drv:
        drv.get(chain.url)
        wait_for(lambda: js(drv, "return model('frame_meta').data.seq[0] >= 0"), 20, what="the first frame")
        buttons = lambda: {b.text.strip(): b for b in js(drv, "return deep('button')")}   # noqa: E731
        # pause / resume
        buttons()["Pause analysis"].click()
        wait_for(lambda: svc.paused, 3, what="the service to pause")
        wait_for(lambda: "ANALYSIS PAUSED" in js(drv, "return deep('.status')[0].textContent"), 4,
                 what="the paused state on the page")
        n_paused = svc.status()["frames_analysed"]
        time.sleep(0.6)
        assert svc.status()["frames_analysed"] == n_paused
        wait_for(lambda: "Resume analysis" in buttons(), 2, what="the resume button")
        buttons()["Resume analysis"].click()
        wait_for(lambda: not svc.paused and svc.status()["frames_analysed"] > n_paused, 4, what="analysis to resume")
        # record to a file of our choice, then stop
        out = tmp_path / "from-dashboard.swrec"
        box = drv.execute_script(FIND_INPUT, "recording file")
        box.clear()
        box.send_keys(str(out) + "\n")
        buttons()["● Record"].click()
        wait_for(lambda: svc.recorder.recording and out.exists(), 4, what="the recording to start")
        wait_for(lambda: svc.recorder.written >= 4, 4, what="frames in the recording")
        wait_for(lambda: "■ Stop recording" in buttons(), 3, what="the stop button")
        buttons()["■ Stop recording"].click()
        wait_for(lambda: not svc.recorder.recording, 4, what="the recording to stop")
        from streamer.recording import RecordingReader

        assert len(list(RecordingReader(out))) >= 4
        # thresholds
        for title, value in (("of n frames", "4"), ("debounce k", "3")):
            box = drv.execute_script(FIND_INPUT, title)
            box.clear()
            box.send_keys(value + "\n")
        time.sleep(0.3)
        buttons()["Apply thresholds"].click()
        wait_for(lambda: tuple(svc.cfg.events.k_of_n) == (3, 4), 4, what="the new debounce setting")
        wait_for(lambda: "done" in js(drv, "return deep('.msg').map(e => e.textContent).join(' ')"), 3,
                 what="the confirmation line")
        assert not severe_console_errors(drv)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_command_serves_the_dashboard_and_analyses(tmp_path):
    """`stemwatch demo` (what `make demo` runs) for a few seconds, on a replayed recording."""
    import re
    import subprocess
    import sys
    import urllib.request

    rec_dir = tmp_path / "replay"
    rec_dir.mkdir()
    _synthetic_recording(rec_dir / "a.swrec", n_frames=30)
    cmd = [sys.executable, "-m", "stemwatch", "demo", "--source", "replay", "--replay-data", str(rec_dir),
           "--duration-s", "6", "--port", "0", "--no-browser",
           "--data-endpoint", f"tcp://127.0.0.1:{_free_port()}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"stemwatch dashboard: (http://127\.0\.0\.1:\d+/)", line)
        assert m, f"no URL printed: {line!r}"
        page = urllib.request.urlopen(m.group(1), timeout=10).read().decode()
        assert "stemwatch" in page
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    frames = [int(x) for x in re.findall(r"frames (\d+)", err)]
    assert frames and frames[-1] >= 10, err[-2000:]
    assert "replay of" in err and "analysed" in err
