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
    assert it.before_seq < it.event["first_frame"] <= it.after_seq and it.before.shape == it.after.shape
    assert len(it.after_xy) > 10 and "Si" in it.after_species.tolist()
    html = build_report(d).read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert '"name":"representative"' in html.replace(" ", "")
