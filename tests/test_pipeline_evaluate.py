"""``stemwatch evaluate`` metrics on constructed cases with known answers, and on tracker output."""

import json

import numpy as np
import pytest

from engine.analyze import ResultWriter
from lab.evaluate import Truth, TruthFrame, evaluate, format_report
from engine.track import Tracker
from engine.types import Event, FrameResult
from stemwatch.cli import main

from _track_lattice import chemistry_of, id_switches, make_movie


def _write(out, frames, events_per_frame=None, ps=0.1):
    """frames: list of (xy_px, species, ids); writes atoms.csv/events.jsonl/frames.csv like analyze."""
    w = ResultWriter(out)
    for t, (xy, sp, ids) in enumerate(frames):
        chem = chemistry_of(np.asarray(xy, float), np.asarray(sp), ps)
        evs = (events_per_frame or {}).get(t, [])
        w.write(FrameResult(series="s", seq=t, t_acquired=float(t), pixel_size_A=ps, frame_shape=(100, 100),
                            chemistry=chem, track_ids=np.asarray(ids, np.int64), events=evs))
    w.close(w.summary())


def _ev(frame, kind, x, y, atom_id=0, before="", after=""):
    return Event(frame=frame, t_acquired=float(frame), latency_s=0.0, kind=kind, atom_id=atom_id, x=x, y=y,
                 x_A=x * 0.1, y_A=y * 0.1, before=before, after=after, confidence=1.0)


def _truth(frames, events=(), ps=0.1, shape=(100, 100)):
    return Truth(frames=[TruthFrame(t, np.asarray(xy, float), np.asarray(sp), np.asarray(ids))
                         for t, (xy, sp, ids) in enumerate(frames)], events=list(events), pixel_size_A=ps,
                 shape_px=shape)


def test_perfect_output_scores_one(tmp_path):
    mv = make_movie(n_frames=8, seed=0)
    _write(tmp_path, mv.truth)
    r = evaluate(tmp_path, _truth(mv.truth, shape=mv.frames[0][2]))
    assert r["detection"]["precision"] == r["detection"]["recall"] == 1.0
    assert r["tracking"]["mota"] == 1.0 and r["tracking"]["idf1"] == pytest.approx(1.0)
    assert r["tracking"]["id_switches"] == 0 and r["localisation_A"]["rmse"] < 1e-3
    assert r["species"]["si_recall"] == 1.0


def test_swapped_identities_are_counted(tmp_path):
    xy = np.array([[10.0, 10.0], [50.0, 50.0]])
    truth = [(xy, [0, 0], [7, 8])] * 10
    hyp = [(xy, [0, 0], [1, 2] if t < 5 else [2, 1]) for t in range(10)]
    _write(tmp_path, hyp)
    r = evaluate(tmp_path, _truth(truth))
    assert r["tracking"]["id_switches"] == 2
    assert r["tracking"]["mota"] == pytest.approx(1 - 2 / 20)
    assert r["tracking"]["idf1"] == pytest.approx(0.5)


def test_misses_spurious_and_localisation(tmp_path):
    xy = np.array([[10.0, 10.0], [30.0, 30.0], [60.0, 60.0], [80.0, 20.0]])
    truth = [(xy, [0, 1, 0, 0], [1, 2, 3, 4])] * 4
    # one atom missed, one spurious far away, one 2 px (0.2 A) off, the Si read as C
    hyp_xy = np.array([[10.0, 12.0], [30.0, 30.0], [60.0, 60.0], [5.0, 90.0]])
    _write(tmp_path, [(hyp_xy, [0, 0, 0, 0], [11, 12, 13, 14])] * 4)
    r = evaluate(tmp_path, _truth(truth))
    d = r["detection"]
    assert (d["tp"], d["fp"], d["fn"]) == (12, 4, 4)
    assert r["localisation_A"]["median"] == pytest.approx(0.0) and r["localisation_A"]["p95"] > 0.15
    assert r["species"]["si_recall"] == 0.0
    assert r["tracking"]["mota"] == pytest.approx(1 - 8 / 16)


def test_event_matching_latency_precision_flicker_and_field_events(tmp_path):
    xy = np.array([[20.0, 20.0], [70.0, 70.0], [40.0, 80.0]])
    truth = [(xy, [1, 1, 1], [1, 2, 3])] * 12
    gt_events = [{"frame": 0, "atom_id": 1, "kind": "si_hop"},        # in the warm-up: reported, not counted
                 {"frame": 11, "atom_id": 2, "kind": "si_3_to_4"},    # last frame: cannot be confirmed
                 {"frame": 2, "atom_id": 1, "kind": "si_3_to_4"},     # found 2 frames late
                 {"frame": 5, "atom_id": 2, "kind": "si_hop"},        # reported 5 frames late: missed
                 {"frame": 8, "atom_id": 3, "kind": "flicker"}]       # must raise nothing
    hyp_events = {1: [_ev(1, "si_hop", 20.0, 20.0)],
                  4: [_ev(4, "si_3_to_4", 20.5, 20.0)],
                  10: [_ev(10, "si_hop", 70.0, 70.0)],
                  9: [_ev(9, "dimer_formed", 40.0, 80.0)],                       # a false alarm at the flicker
                  6: [_ev(6, "si_lost", 99.0, 50.0, before="Si", after="left field")]}  # field bookkeeping
    _write(tmp_path, truth, hyp_events)
    r = evaluate(tmp_path, _truth(truth, gt_events))["events"]
    assert (r["truth_events"], r["found"], r["reported"]) == (2, 1, 4)
    assert (r["unconfirmable_truth_events"], r["unconfirmable_found"]) == (2, 1)
    assert r["recall"] == 0.5 and r["precision"] == pytest.approx(2 / 4)   # the warm-up report is right
    assert r["latency_frames_max"] == 2 and r["false_events"] == 2
    assert r["flicker_alarms"] == 1 and r["field_events"] == 1
    assert r["false_per_1000_frames"] == pytest.approx(2 / 12 * 1000)
    assert r["missed"] == [{"frame": 5, "kind": "si_hop", "atom_id": 2}]


def test_tracker_output_metrics_agree_with_direct_count(tmp_path):
    mv = make_movie(n_frames=25, drift_A=(0.2, 0.1), p_miss=0.01, p_spurious=0.002,
                    script=[(8, "hop", 0), (14, "3to4", 1)], seed=4)
    tr = Tracker()
    w = ResultWriter(tmp_path)
    ids = []
    for t, (chem, gid, shape) in enumerate(mv.frames):
        u = tr.update(chem, t, float(t), frame_shape=shape)
        ids.append(u.track_ids)
        w.write(FrameResult(series="s", seq=t, t_acquired=float(t), pixel_size_A=mv.ps, frame_shape=shape,
                            chemistry=chem, track_ids=u.track_ids, events=u.events, drift_px=u.drift_px))
    w.close(w.summary())
    truth = _truth(mv.truth, mv.events, ps=mv.ps, shape=mv.frames[0][2])
    r = evaluate(tmp_path, truth)
    assert r["detection"]["recall"] == pytest.approx(0.99, abs=0.01)
    assert r["detection"]["precision"] > 0.99
    assert r["tracking"]["idf1"] > 0.99
    assert r["tracking"]["id_switches"] <= id_switches(mv, ids)[0] + 1
    assert r["events"]["recall"] == 1.0 and r["events"]["false_events"] == 0
    assert r["events"]["latency_frames_max"] <= 3
    text = format_report(r)
    assert "IDF1" in text and "si_hop" in text


def test_evaluate_cli_reads_the_simulator_truth(tmp_path, capsys):
    """The real truth format (engine.sim.truth) end to end through the CLI: a perfect answer."""
    from engine.sim.movie import MovieSpec, run_movie
    from engine.sim.truth import save_truth

    _, gt = run_movie(MovieSpec(n_frames=6, shape_px=(96, 96), events=[(3, "si_3_to_4", 0)], seed=5))
    save_truth(gt, tmp_path / "movie.swrec")
    frames = [(f.xy_px, f.species, f.ids) for f in gt.frames]
    ev = gt.events[0]
    _write(tmp_path / "out", frames, {5: [_ev(5, "si_3_to_4", ev["x"], ev["y"], before="3-fold", after="4-fold")]})
    assert main(["evaluate", str(tmp_path / "out"), str(tmp_path / "movie.swrec"), "--json",
                 str(tmp_path / "r.json"), "--end-margin", "0"]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["tracking"]["mota"] == 1.0 and r["detection"]["recall"] == 1.0
    assert r["events"]["recall"] == 1.0 and r["events"]["latency_frames_max"] == 2
    assert "MOTA 1.0000" in capsys.readouterr().out


def test_edge_strip_is_an_ignore_region(tmp_path):
    xy = np.array([[50.0, 50.0], [0.5, 40.0], [60.0, 99.0]])          # two atoms within 0.5 A of the edge
    truth = [(xy[:2], [0, 0], [1, 2])] * 3                            # the truth lacks the third (cut) atom
    _write(tmp_path, [(xy[[0, 2]], [0, 0], [5, 6])] * 3)              # the detector misses the second
    r = evaluate(tmp_path, _truth(truth))
    assert (r["detection"]["tp"], r["detection"]["fp"], r["detection"]["fn"]) == (3, 0, 0)
    r = evaluate(tmp_path, _truth(truth), edge_ignore_A=0.0)
    assert (r["detection"]["tp"], r["detection"]["fp"], r["detection"]["fn"]) == (3, 3, 3)
