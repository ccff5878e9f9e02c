"""engine.stats: histories with unknown frames, transition counts, censored exposure, exact intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import stats as S
from engine.types import Atoms, Chemistry, Defect, FrameResult


def _frames(n, dose=1e5, dt=0.2, usable=None):
    return S.FrameInfo(np.arange(n, dtype=np.int64), np.arange(n) * dt, np.full(n, dose, float),
                       np.ones(n, bool) if usable is None else np.asarray(usable, bool))


def _obs(rows):
    """rows: (frame, track, state name)."""
    f, t, s = zip(*rows)
    n = len(rows)
    return S.DopantObservations(np.array(f, np.int64), np.array(t, np.int64),
                                np.array([S.STATES.index(x) for x in s], np.int16), np.zeros(n), np.zeros(n),
                                np.full(n, "", object))


def test_history_marks_unusable_and_unseen_frames_unknown_and_drops_one_frame_flicker():
    a, b = "3-fold", "4-fold"
    seq = [a, a, a, b, a, a, a, a, b, b, b, b]          # frame 3: a one-frame misreading
    rows = [(i, 7, s) for i, s in enumerate(seq) if i != 6]   # frame 6 not observed (missed)
    usable = np.ones(12, bool)
    usable[10] = False                                    # frame verdict not ok
    h = S.build_histories(_obs(rows), _frames(12, usable=usable), min_run_frames=2)
    assert h.tracks.tolist() == [7]
    st = h.dense()[0]
    assert st[3] == S.UNKNOWN and st[6] == S.UNKNOWN and st[10] == S.UNKNOWN
    assert h.dense("raw")[0, 3] == S.STATES.index(b)    # the raw reading is kept beside
    assert [S.STATES[x] for x in st[[0, 4, 8, 11]]] == [a, a, b, b]
    stats = S.compute_stats(h, max_gap_frames=4)
    tr = stats.transitions()
    assert [(t["from"], t["to"], t["count"]) for t in tr] == [(a, b, 1)]
    # exposure in 3-fold: steps 0->1->2, 4->5->7->8 = 6 frames (frame 6 unseen: the gap counts; the
    # step 2->4 across the removed reading of frame 3 is dropped with its exposure)
    assert tr[0]["exposure_frames"] == 6.0
    assert tr[0]["exposure_e_per_A2"] == pytest.approx(6e5)
    assert tr[0]["exposure_s"] == pytest.approx(1.2)
    # 4-fold observed 8, 9, 11 (10 unusable): exposure 3 frames, no exit
    d = stats.dwell()
    assert d["4-fold"]["exposure_frames"] == 3.0 and d["4-fold"]["exits"] == 0
    assert d["3-fold"]["mean_frames"] == pytest.approx(6.0)
    m = stats.markov()
    assert m["states"] == [a, b] and m["counts"] == [[4, 1], [0, 2]]
    assert stats.dopants[0]["frames_unknown"] == 3


def test_long_gap_censors_instead_of_counting_a_transition():
    rows = [(i, 1, "3-fold") for i in range(5)] + [(i, 1, "4-fold") for i in range(15, 20)]
    st = S.compute_stats(S.build_histories(_obs(rows), _frames(20)), max_gap_frames=4)
    assert st.transitions() == []                        # 10 frames unseen: not a transition
    assert st.exposure["frames"][S.STATES.index("3-fold")] == 4.0


def test_garwood_interval_matches_tabulated_values():
    r, lo, hi = S.poisson_rate_ci(np.array([0, 1, 10]), 1.0)
    assert lo[0] == 0.0 and hi[0] == pytest.approx(3.689, abs=1e-3)
    assert lo[1] == pytest.approx(0.0253, abs=1e-4) and hi[1] == pytest.approx(5.572, abs=1e-3)
    assert lo[2] == pytest.approx(4.795, abs=1e-3) and hi[2] == pytest.approx(18.39, abs=1e-2)
    r, lo, hi = S.poisson_rate_ci(3, 0.0)
    assert np.isnan(r) and np.isnan(hi)


def test_rates_per_dose_recover_a_known_cross_section():
    """Plain-data two-state process with per-frame switching probability 1 - exp(-sigma D): the 95 %
    intervals of both rates contain sigma in most of 40 repeats, and the barn figure is sigma / 1e-8."""
    rng = np.random.default_rng(1)
    dose = 1e5
    sig = {0: 4e-7, 1: 1e-6}                             # A^2: 40 and 100 barn
    hits = {0: 0, 1: 0}
    for rep in range(40):
        rows = []
        for track in range(6):
            s = 0
            start = int(rng.integers(0, 30))
            stop = int(rng.integers(150, 200))
            for f in range(start, stop):
                rows.append((f, track, S.STATES[s]))
                if rng.uniform() < 1 - np.exp(-sig[s] * dose):
                    s = 1 - s
        st = S.compute_stats(S.build_histories(_obs(rows), _frames(200, dose), min_run_frames=1))
        for t in st.transitions():
            k = S.STATES.index(t["from"])
            hits[k] += t["cross_section_barn_lo"] <= sig[k] / S.BARN_A2 <= t["cross_section_barn_hi"]
            assert t["cross_section_barn"] == pytest.approx(t["rate_per_e_per_A2"] / 1e-8)
    assert hits[0] >= 35 and hits[1] >= 35


def test_unknown_dose_gives_rates_per_frame_and_no_cross_section():
    rows = [(i, 1, "3-fold") for i in range(5)] + [(i, 1, "4-fold") for i in range(5, 10)]
    fr = _frames(10, dose=np.nan)
    st = S.compute_stats(S.build_histories(_obs(rows), fr))
    t = st.transitions()[0]
    assert t["rate_per_frame"] == pytest.approx(1 / 5) and t["cross_section_barn"] is None
    d = json.loads(json.dumps(st.to_dict()))
    assert d["dose"]["e_per_A2_per_frame"] is None
    csv_text = S.transitions_csv(st)
    assert csv_text.splitlines()[0].startswith("kind,from,to,count")
    assert "3-fold->4-fold,3-fold,4-fold,1,5" in csv_text


def test_dose_per_frame_from_metadata():
    assert S.dose_per_frame({"dose_e_per_A2": 3e5}, 0.1)[0] == 3e5
    d, src = S.dose_per_frame({"beam_current_pA": 30, "dwell_s": 16e-6}, 0.1)
    assert d == pytest.approx(30e-12 * 16e-6 / 1.602176634e-19 / 0.01) and "beam_current_pA" in src
    assert S.dose_per_frame({"dose_e_per_A2": 3e5}, 0.1, override=1e4) == (1e4, "--dose option")
    assert S.dose_per_frame({"dwell_s": 1e-6}, 0.1)[0] is None


def _result(seq, species, bonds, ids, error=None):
    n = len(species)
    atoms = Atoms(np.c_[200.0 + np.arange(n) * 10.0, np.full(n, 320.0)], np.asarray(species, np.int8),
                  np.ones(n, np.float32), np.zeros((n, 3), np.float32), np.zeros(n, bool), 0.1)
    ch = Chemistry(atoms, np.asarray(bonds, np.int32).reshape(-1, 2), np.zeros(len(bonds)),
                   np.zeros(n, np.int16), [Defect("Si-4fold", "Si1C4", np.array([0]), (0.0, 0.0))],
                   np.array([0] + [-1] * (n - 1), np.int32))
    return FrameResult("s", seq, float(seq), 0.1, (640, 640), ch, np.asarray(ids, np.int64), error=error)


def test_dopant_observations_from_a_frame_result():
    # atom 0: Si bonded to 4 C; atom 5: Si bonded to 2 C and to Si 6 (dimer); 6 bonded to 5 and 2 C
    species = [1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    bonds = [(0, 1), (0, 2), (0, 3), (0, 4), (5, 6), (5, 7), (5, 8), (6, 9), (6, 10)]
    ids = [10, 11, 12, 13, 14, 15, -1, 17, 18, 19, 20]     # atom 6 has no track yet
    o = S.dopant_observations(_result(3, species, bonds, ids))
    assert o.track.tolist() == [10, 15]
    assert [S.STATES[x] for x in o.state] == ["4-fold", "dimer"]
    assert o.formula.tolist() == ["Si1C4", ""] and o.frame.tolist() == [3, 3]
    assert o.cluster.tolist() == [-1, 15]          # the dimer's key: its smallest tracked member
    assert len(S.dopant_observations(_result(3, species, bonds, ids, error="backend failed"))) == 0
    r = _result(3, species, bonds, ids)
    r.chemistry.atoms.xy_px[5] = (25.0, 320.0)                # 2.5 A from the left edge: neighbours cut off
    assert S.dopant_observations(r).track.tolist() == [10]


def test_accumulator_treats_failed_frames_as_unknown_and_writes_files(tmp_path):
    species = [1, 0, 0, 0, 0]
    acc = S.StatsAccumulator(dose_e_per_A2=2e5, dose_source="test")
    for f in range(12):
        bonds = [(0, 1), (0, 2), (0, 3)] + ([(0, 4)] if f >= 6 else [])
        acc.add(_result(f, species, bonds, [1, 2, 3, 4, 5], error="x" if f == 3 else None))
    st = acc.stats()
    assert st.frames_usable == 11
    t = st.transitions()
    assert [(x["from"], x["to"], x["count"]) for x in t] == [("3-fold", "4-fold", 1)]
    assert t[0]["exposure_e_per_A2"] == pytest.approx(6 * 2e5)
    S.write_stats(st, tmp_path)
    d = json.loads((tmp_path / "stats.json").read_text())
    assert d["frames"] == {"total": 12, "usable": 11, "unknown": 1}
    assert d["transitions"][0]["cross_section_barn"] == pytest.approx(1 / (6 * 2e5) / 1e-8)
    assert (tmp_path / "transitions.csv").read_text().count("\n") == 2


def test_analyze_writes_dopant_statistics_of_the_bundled_switching_movie(tmp_path):
    """Frames 8 (3 -> 4) and 16 (4 -> 3) of replay_data/01_switching_256 switch the Si: analyze's
    stats.json and transitions.csv count one of each, with the dose from --dose."""
    from stemwatch.cli import main

    out = tmp_path / "a"
    rc = main(["analyze", "replay_data/01_switching_256.swrec", "--out", str(out), "--limit", "22", "--quiet",
               "--dose", "2e5"])
    assert rc == 0
    d = json.loads((out / "stats.json").read_text())
    assert d["complete"] and d["dose"] == {"e_per_A2_per_frame": 2e5, "source": "--dose option",
                                           "session_e_per_A2": 2e5 * 22}
    got = {t["kind"]: t for t in d["transitions"]}
    assert set(got) == {"3-fold->4-fold", "4-fold->3-fold"}
    assert got["3-fold->4-fold"]["count"] == 1 and got["4-fold->3-fold"]["count"] == 1
    t = got["3-fold->4-fold"]
    # 3-fold observed from frame 1 to the switch at 8 (7 steps) and from 16 to 21 (5 steps)
    assert t["exposure_frames"] in (11.0, 12.0, 13.0)
    assert t["cross_section_barn"] == pytest.approx(1 / (t["exposure_frames"] * 2e5) / 1e-8)
    rows = (out / "transitions.csv").read_text().splitlines()
    assert len(rows) == 3
    st, h = S.stats_from_dir(out)                            # the report recomputes the same from the files
    assert [(x["kind"], x["count"]) for x in st.transitions()] == [(x["kind"], x["count"]) for x in d["transitions"]]
    assert json.loads((out / "summary.json").read_text())["acquisition"]["pixel_size_A"] == pytest.approx(0.1)


def test_simulator_draws_dose_driven_events_at_the_recorded_rates():
    """Truth-side check (no analysis): the simulator's dose-driven 3 <-> 4 switches over many dopant-frames
    match the cross-sections it records in the truth, and the scripted scenarios are untouched."""
    from engine.sim.movie import MovieSimulator, MovieSpec

    spec = MovieSpec(n_frames=300, shape_px=(128, 128), dopants=("si3",), drift_A_per_frame=(0.0, 0.0),
                     drift_wander_A=0.0, dose_e_per_A2=1e5, seed=7,
                     event_cross_sections_barn={"si_3_to_4": 60.0, "si_4_to_3": 120.0})
    sim = MovieSimulator(spec)
    states = []
    kinds = []
    state = "si3"
    for _img, truth in sim.frames():
        for e in truth.events:
            kinds.append(e["kind"])
            state = {"si_3_to_4": "si4", "si_4_to_3": "si3"}.get(e["kind"], state)
        states.append(state)
    meta = sim.meta()
    assert meta["rates_per_dose"]["si_3_to_4"]["cross_section_barn"] == 60.0
    assert meta["rates_per_dose"]["si_4_to_3"]["rate_per_e_per_A2"] == pytest.approx(1.2e-6)
    n34, n43 = kinds.count("si_3_to_4"), kinds.count("si_4_to_3")
    frames3 = sum(s == "si3" for s in states[:-1])
    frames4 = sum(s == "si4" for s in states[:-1])
    assert n34 > 10 and n43 > 10
    for n, e, sig in ((n34, frames3, 60.0), (n43, frames4, 120.0)):
        r, lo, hi = S.poisson_rate_ci(n, e * 1e5)
        assert lo / S.BARN_A2 <= sig <= hi / S.BARN_A2
    with pytest.raises(ValueError, match="not a dopant event kind"):
        MovieSimulator(MovieSpec(n_frames=2, shape_px=(64, 64), event_cross_sections_barn={"flicker": 1.0}))


def test_by_default_a_one_frame_dwell_counts_as_two_transitions():
    """At 4-6 % switches per frame a switch and its reverse in consecutive frames is common in the
    simulator's truth; a default that dropped one-frame runs made the pooled rates ~20 % low
    (docs/statistics.md). The filter stays available (``min_run_frames=2``)."""
    a, b = "3-fold", "4-fold"
    rows = [(i, 7, s) for i, s in enumerate([a, a, a, b, a, a, a])]
    st = S.compute_stats(S.build_histories(_obs(rows), _frames(7)))
    assert sorted((t["kind"], t["count"]) for t in st.transitions()) == [("3-fold->4-fold", 1), ("4-fold->3-fold", 1)]
    assert st.to_dict()["method"]["min_run_frames"] == 1
    filtered = S.compute_stats(S.build_histories(_obs(rows), _frames(7), min_run_frames=2))
    assert filtered.transitions() == []
