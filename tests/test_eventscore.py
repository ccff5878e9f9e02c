"""One event scorer: the soak's score and ``stemwatch evaluate`` agree on the same run.

The run: the truth of replay_data/02_field_512 (20 frames, 10 transformation events, a flicker,
defect labels), exact atom detections, and a set of reports that exercises every rule: found on
time, found late, one reported too late (missed + false), one at the wrong place, one of the wrong
kind, a field event, a new motif on a truth defect and one elsewhere, an alarm at the flicker, and
an event in the warm-up frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lab.evaluate import evaluate, load_ground_truth
from lab.soak import MovieTruth, score_series

MOVIE = Path(__file__).resolve().parent.parent / "replay_data" / "02_field_512.swrec"
SHARED = ("truth_events", "found", "recall", "reported", "precision", "false_events", "flickers", "flicker_alarms")


def _reports(truth) -> list[dict]:
    ev = [e for e in truth.events if e["kind"] != "flicker"]
    out = []
    for k, e in enumerate(ev):
        r = {"frame": int(e["frame"]), "kind": e["kind"], "atom_id": 1000 + k, "x": float(e["x"]) + 0.5,
             "y": float(e["y"]), "before": e["before"], "after": e["after"]}
        if k == 1:
            r["frame"] += 2                        # late, inside the window
        elif k == 2:
            r["frame"] += 4                        # too late: a miss and a false report
        elif k == 4:
            r["x"] += 40.0                         # 4 A away: a miss and a false report
        elif k == 5:
            r["kind"] = "si_3_to_4"                # wrong kind
        out.append(r)
    fl = next(e for e in truth.events if e["kind"] == "flicker")
    out.append({"frame": int(fl["frame"]) + 1, "kind": "si_3_to_4", "atom_id": 7, "x": float(fl["x"]),
                "y": float(fl["y"]), "before": "3-fold", "after": "4-fold"})           # a flicker alarm
    tf = truth.frames[10]
    d = tf.xy_px[tf.label != 0][0]
    out.append({"frame": 10, "kind": "new_motif", "atom_id": 8, "x": float(d[0]), "y": float(d[1]),
                "before": "", "after": "motif 3"})                                      # plausible
    out.append({"frame": 10, "kind": "new_motif", "atom_id": 9, "x": 5.0, "y": 5.0, "before": "", "after": "m"})
    out.append({"frame": 12, "kind": "si_hop", "atom_id": 10, "x": 1.0, "y": 2.0, "before": "outside field",
                "after": "site"})                                                       # field bookkeeping
    return out


def _write_run(out: Path, truth, reports) -> None:
    out.mkdir()
    rows = ["frame,atom_id,x,y,species,coordination,confidence"]
    names = ("C", "Si", "other")
    for tf in truth.frames:
        rows += [f"{tf.seq},{i},{x:.3f},{y:.3f},{names[min(int(s), 2)]},3,1.0"
                 for i, (x, y), s in zip(tf.ids, tf.xy_px, tf.species)]
    (out / "atoms.csv").write_text("\n".join(rows) + "\n")
    (out / "frames.csv").write_text("frame,t_acquired\n" + "".join(f"{tf.seq},0\n" for tf in truth.frames))
    (out / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    truth = load_ground_truth(MOVIE)
    reports = _reports(truth)
    out = tmp_path_factory.mktemp("eventscore") / "run"
    _write_run(out, truth, reports)
    return truth, reports, out


def test_soak_score_equals_evaluate_on_the_same_run(run):
    truth, reports, out = run
    ev = evaluate(out, truth)["events"]
    soak = score_series(MovieTruth.load(MOVIE), np.array([tf.seq for tf in truth.frames]), reports).summary()
    assert {k: soak[k] for k in SHARED} == {k: ev[k] for k in SHARED}
    assert soak["latency_analysed_frames_mean"] == pytest.approx(ev["latency_frames_mean"])
    assert soak["latency_analysed_frames_max"] == ev["latency_frames_max"]
    # and the run is not trivial: every rule was used
    assert ev["found"] < ev["truth_events"] and ev["false_events"] >= 4 and ev["flicker_alarms"] == 1
    assert ev["new_motif_on_truth_defect"] == 1 and ev["field_events"] == 1 and ev["latency_frames_max"] == 2


def test_latency_counts_analysed_frames_when_frames_are_dropped(run):
    """The soak drops frames: a report 2 seqs after the truth event but 1 analysed frame later,
    with the frame between not analysed, is on time at max_latency=1; evaluate's full-run rule is
    the same with nothing dropped (above)."""
    truth, _, _ = run
    mt = MovieTruth.load(MOVIE)
    e = next(e for e in truth.events if e["kind"] == "si_3_to_4")
    f = int(e["frame"])
    rep = [{"frame": f + 2, "kind": e["kind"], "x": float(e["x"]), "y": float(e["y"]), "before": "", "after": ""}]
    every = np.arange(len(truth.frames))
    dropped = every[every != f + 1]
    assert score_series(mt, every, rep, max_latency=1).found == 0
    assert score_series(mt, dropped, rep, max_latency=1).found == 1


def test_a_vacated_site_moves_with_its_neighbours_in_a_sheared_frame():
    """A vacancy's atom is gone in the report's frame; the scorer must say where its site is then.
    In a frame scanned while the drift reversed, rows moved unlike the frame's origin (the origin
    says 18 px left, the rows around the site moved 11 px right): the site moves with its truth
    neighbours (seed 991021: an on-time, on-site vacancy report counted as a miss + a false alarm)."""
    from lab.eventscore import TruthEvents

    ring = {10 + k: (100.0 + 14.0 * np.cos(a), 100.0 + 14.0 * np.sin(a))
            for k, a in enumerate(np.linspace(0, 2 * np.pi, 6, endpoint=False))}
    far = {50: (300.0, 300.0)}
    shift = np.array([11.0, -13.0])
    pos = {60: {**ring, **far},
           62: {**{g: tuple(np.add(p, shift)) for g, p in ring.items()}, 50: (282.0, 287.0)}}
    te = TruthEvents(pixel_size_A=0.1, events=[], flickers=[], pos=pos,
                     origins={60: np.array([13.3, 14.1]), 62: np.array([15.2, 15.4])})
    at = te.position_at({"frame": 60, "atom_id": 1}, np.array([100.0, 100.0]), 62)
    assert np.allclose(at, [111.0, 87.0])
    # no truth neighbours near the site: the field's origin moves it
    te2 = TruthEvents(pixel_size_A=0.1, events=[], flickers=[], pos={60: far, 62: {50: (282.0, 287.0)}},
                      origins={60: np.array([13.3, 14.1]), 62: np.array([15.2, 15.4])})
    assert np.allclose(te2.position_at({"frame": 60, "atom_id": 1}, np.array([100.0, 100.0]), 62), [81.0, 87.0])
