"""Live dopant statistics (engine.stats_live.LiveStats): fed frame by frame like the live service,
skipped frames still count their dose, and a saved session folder makes the report."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from engine import stats as S


def test_exposure_counts_the_dose_of_frames_skipped_by_live_analysis():
    """Live analysis takes the newest frame: analysed seqs 0, 2, 4, ... Each step still received two
    frames' dose, so the exposure per dose is that of every scanned frame."""
    seq = np.arange(0, 40, 2)
    n = len(seq)
    fi = S.FrameInfo(seq, seq * 0.1, np.full(n, 1e5), np.ones(n, bool))
    states = ["3-fold"] * 10 + ["4-fold"] * 10
    obs = S.DopantObservations(seq.copy(), np.zeros(n, np.int64), np.array([S.STATES.index(x) for x in states], np.int16),
                               np.zeros(n), np.zeros(n), np.full(n, "", object))
    t = S.compute_stats(S.build_histories(obs, fi)).transitions()[0]
    assert t["exposure_frames"] == 20.0 and t["exposure_e_per_A2"] == pytest.approx(2e6)
    assert t["exposure_s"] == pytest.approx(2.0)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from engine.pipeline import Pipeline
    from engine.stats_live import LiveStats
    from stemwatch.config import Config
    from streamer.importers import open_frames

    ls = LiveStats()
    pipe = Pipeline(Config(), keep_image=True)
    try:
        for f in itertools.islice(open_frames("replay_data/01_switching_256.swrec"), 20):
            ls.add(pipe.process(f), f.meta)
    finally:
        pipe.close()
    return ls


def test_live_stats_match_the_scripted_switches(live, tmp_path):
    st = live.stats()
    assert st.dose_e_per_A2_per_frame == 1e5 and "metadata" in st.dose_source
    assert {t["kind"]: t["count"] for t in st.transitions()} == {"3-fold->4-fold": 1, "4-fold->3-fold": 1}
    live.write(tmp_path)
    d = json.loads((tmp_path / "stats.json").read_text())
    assert d["frames"]["total"] == 20 and d["transitions"][0]["cross_section_barn"] > 0


def test_saved_live_session_folder_makes_a_report_with_the_gallery(live, tmp_path):
    from dashboard.report import build_report
    from engine.gallery import load_gallery

    d = live.save_folder(tmp_path / "sess")
    items = load_gallery(d / "gallery.npz")
    kinds = [it.event["kind"] for it in items]
    assert "si_3_to_4" in kinds and "si_4_to_3" in kinds
    it = items[kinds.index("si_3_to_4")]
    assert it.before.seq < it.event["first_frame"] <= it.after.seq and it.before.image.shape == it.after.image.shape
    assert len(it.after.xy) > 10 and "Si" in it.after.species.tolist() and len(it.after.bonds) > 10
    html = build_report(d).read_text()
    assert html.count("class='gallery-item'") == len(items)        # one before/after picture per event
    assert '"name":"representative"' in html.replace(" ", "")


def test_live_service_keeps_the_statistics_of_the_series(tmp_path):
    """Frames over a real socket: the service's LiveStats takes the dose from the start message and
    counts every analysed frame; serve's --stats-dir writer (LiveStats.write) puts the files there."""
    import time

    from engine.service import LiveService
    from stemwatch.config import Config
    from streamer import Publisher
    from streamer.importers import open_frames

    frames = list(itertools.islice(open_frames("replay_data/01_switching_256.swrec"), 12))
    pub = Publisher("tcp://127.0.0.1:*", bind=True)
    svc = LiveService(Config().replace(inference={"backend": "onnx"}), pub.endpoint)
    try:
        svc.start()
        time.sleep(0.3)
        pub.start_series("stats-live", frames[0].shape, np.uint16, 0.1, dwell_s=16e-6, frame_time_s=0.2,
                         meta={"beam_current_pA": 30.0})
        for f in frames:
            pub.send_frame(f.data)
            time.sleep(0.05)
        deadline = time.time() + 60
        while time.time() < deadline and svc.status()["frames_analysed"] + svc.status()["dropped_for_analysis"] < 12:
            time.sleep(0.05)
        time.sleep(0.3)
        st = svc.stats.stats()
        n = svc.status()["frames_analysed"]
    finally:
        svc.stop()
        pub.close()
    assert n >= 1 and st.frames_total == n
    assert st.dose_e_per_A2_per_frame == pytest.approx(30e-12 * 16e-6 / 1.602176634e-19 / 0.01)
    assert "beam_current_pA" in st.dose_source
    svc.stats.write(tmp_path)
    assert json.loads((tmp_path / "stats.json").read_text())["frames"]["total"] == n
