"""engine.stats_clusters: dimers and clusters followed as one object (issue 18 criterion 1)."""

from __future__ import annotations

import json

import numpy as np

from engine import stats as S
from engine.stats_clusters import cluster_histories
from engine.types import Atoms, Chemistry, Defect, FrameResult


def _obs(rows):
    """rows: (frame, track, cluster key, formula)."""
    f, t, k, fm = zip(*rows)
    n = len(rows)
    return S.DopantObservations(np.array(f, np.int64), np.array(t, np.int64),
                                np.full(n, S.STATES.index("cluster"), np.int16), np.arange(n, dtype=float),
                                np.zeros(n), np.array(fm, object), np.array(k, np.int64))


def _frames(n, usable=None):
    return S.FrameInfo(np.arange(n, dtype=np.int64), np.arange(n) * 0.5, np.full(n, 1e5),
                       np.ones(n, bool) if usable is None else np.asarray(usable, bool))


def test_a_cluster_keeps_its_identity_through_joins_re_tracking_and_unusable_frames():
    rows = []
    for f in (0, 1, 2, 3):                                             # frame 4: not observed
        rows += [(f, 1, 1, "Si2C6"), (f, 2, 1, "Si2C6")]              # a dimer of tracks 1 and 2
    for f in (5, 6):
        rows += [(f, 3, 3, "Si3C7")]                                   # only track 3 seen (joined)
    for f in (7, 8, 9):
        rows += [(f, 2, 2, "Si3C7"), (f, 3, 2, "Si3C7"), (f, 4, 2, "Si3C7")]   # track 1 re-tracked as 4
    for f in (0, 1, 2):
        rows += [(f, 8, 7, "Si2C6"), (f, 7, 7, "Si2C6")]              # an unrelated dimer
    rows += [(f, 9, -1, "Si1C3") for f in range(10)]                  # a lone dopant: no cluster
    usable = np.ones(10, bool)
    usable[8] = False                                                  # frame 8's verdict was not ok
    cl = cluster_histories(_obs(rows), _frames(10, usable), max_gap_frames=4)
    assert [c["id"] for c in cl] == [1, 2]
    big, small = cl
    # tracks 1-2 (frames 0-3) and 3 (5-6) are linked through track 2 at frames 3 -> 7 and 3 at 6 -> 7
    assert big["members"] == [1, 2, 3, 4] and big["kind"] == "cluster"
    assert big["first_frame"] == 0 and big["last_frame"] == 9
    assert big["frames_known"] == 8 and big["frames_unknown"] == 2    # frames 4 and 8
    assert [(h["from_frame"], h["to_frame"], h["size"], h["formula"]) for h in big["history"]] == [
        (0, 3, 2, "Si2C6"), (5, 6, 1, "Si3C7"), (7, 9, 3, "Si3C7")]
    assert big["changes"] == 2
    assert small["members"] == [7, 8] and small["kind"] == "dimer"
    assert (small["first_frame"], small["last_frame"], small["frames_unknown"]) == (0, 2, 0)


def test_groups_further_apart_than_the_gap_are_different_clusters():
    rows = [(0, 1, 1, "Si2C6"), (0, 2, 1, "Si2C6"), (9, 1, 1, "Si2C6"), (9, 2, 1, "Si2C6")]
    assert len(cluster_histories(_obs(rows), _frames(10), max_gap_frames=4)) == 2
    assert len(cluster_histories(_obs(rows), _frames(10), max_gap_frames=9)) == 1
    assert cluster_histories(S.DopantObservations.empty(), _frames(3)) == []


def _dimer_frame(seq):
    # atoms 0, 1: a Si dimer, each bonded to 2 C; atom 6: a lone 3-fold Si
    species = [1, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    bonds = [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (6, 7), (6, 8), (6, 9)]
    n = len(species)
    atoms = Atoms(np.c_[200.0 + np.arange(n) * 10.0, np.full(n, 320.0)], np.asarray(species, np.int8),
                  np.ones(n, np.float32), np.zeros((n, 3), np.float32), np.zeros(n, bool), 0.1)
    ch = Chemistry(atoms, np.asarray(bonds, np.int32), np.zeros(len(bonds)), np.zeros(n, np.int16),
                   [Defect("dimer", "Si2C4", np.array([0, 1]), (0.0, 0.0))], np.array([0, 0] + [-1] * (n - 2), np.int32))
    return FrameResult("s", seq, float(seq), 0.1, (640, 640), ch, np.arange(30, 30 + n, dtype=np.int64))


def test_stats_json_lists_clusters_live_and_from_the_files(tmp_path):
    acc = S.StatsAccumulator(1e5, "test")
    for k in range(6):
        acc.add(_dimer_frame(k))
    live = acc.stats().to_dict()["clusters"]
    assert len(live) == 1 and live[0]["members"] == [30, 31] and live[0]["kind"] == "dimer"
    assert live[0]["history"] == [{"from_frame": 0, "to_frame": 5, "size": 2, "formula": "Si2C4"}]
    # the same from an analyze-style folder (dopants.csv carries the cluster key)
    obs = acc.observations()
    (tmp_path / "dopants.csv").write_text(",".join(S.DOPANTS_COLUMNS) + "\n" + S.dopants_csv_rows(obs))
    (tmp_path / "frames.csv").write_text("frame,t_acquired\n" + "".join(f"{k},{k}.0\n" for k in range(6)))
    st, _ = S.stats_from_dir(tmp_path, dose_e_per_A2=1e5)
    assert st.to_dict()["clusters"] == json.loads(json.dumps(live))


def test_the_report_lists_the_clusters(tmp_path):
    from dashboard.report import build_report

    d = tmp_path / "a"
    d.mkdir()
    (d / "frames.csv").write_text("frame,t_acquired\n" + "".join(f"{f},{f * 0.2:.1f}\n" for f in range(12)))
    dop = [",".join(S.DOPANTS_COLUMNS)]
    for f in range(12):
        formula, key = ("Si2C6", 7) if f < 6 else ("Si3C7", 7)
        dop += [f"{f},7,dimer,50.0,60.0,{formula},{key}", f"{f},8,dimer,52.0,60.0,{formula},{key}"]
        if f >= 6:
            dop.append(f"{f},9,cluster,51.0,62.0,{formula},{key}")
    (d / "dopants.csv").write_text("\n".join(dop) + "\n")
    text = build_report(d, dose_e_per_A2=1e5).read_text()
    assert "Dimers and clusters" in text                           # (Bokeh escapes non-ASCII as \\uXXXX)
    assert "Si2C6 (2 Si, frames 0\\u20135) \\u2192 Si3C7 (3 Si, frames 6\\u201311)" in text
    assert "7, 8, 9" in text
