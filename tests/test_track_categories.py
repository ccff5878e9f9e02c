"""Issue 15 criterion 1: every event is a transformation or bookkeeping, everywhere it goes."""

import json

from engine.track.categories import BOOKKEEPING, TRANSFORMATION, category_of, is_alarm, severity_of
from engine.types import Event


def _ev(kind, before, after, **kw):
    return Event(frame=5, t_acquired=1.0, latency_s=0.1, kind=kind, atom_id=7, x=1.0, y=2.0, x_A=0.1, y_A=0.2,
                 before=before, after=after, confidence=0.9, **kw)


def test_field_crossings_and_resets_are_bookkeeping_transformations_are_not():
    book = [("si_appeared", "outside field", "Si"), ("si_appeared", "absent", "Si"), ("si_lost", "Si", "left field"),
            ("tracks_reset", "", ""), ("track_lost", "tracked", "lost at edge")]
    trans = [("si_3_to_4", "3-fold", "4-fold"), ("si_4_to_3", "4-fold", "3-fold"), ("si_hop", "site", "site"),
             ("dimer_formed", "separate", "dimer"), ("dimer_broken", "dimer", "separate"),
             ("rotor", "Si3C5 at 30 deg", "Si3C5 at 150 deg"), ("vacancy_created", "C", "vacancy"),
             ("si_lost", "Si", "ejected"), ("si_appeared", "C", "Si"), ("formula_changed", "Si1", "Si2"),
             ("new_motif", "unseen", "new motif 1"), ("something_new", "a", "b")]
    for k, b, a in book:
        assert category_of(k, b, a) == BOOKKEEPING, k
        assert _ev(k, b, a).category == BOOKKEEPING and not is_alarm(_ev(k, b, a)) and severity_of(k, b, a) == 0
    for k, b, a in trans:
        assert category_of(k, b, a) == TRANSFORMATION, (k, b, a)
        assert is_alarm(_ev(k, b, a).to_dict()) and severity_of(k, b, a) >= 1
    assert severity_of("si_lost", "Si", "ejected") > severity_of("si_3_to_4", "3-fold", "4-fold")


def test_category_is_in_the_event_dict_and_json():
    d = json.loads(json.dumps(_ev("si_lost", "Si", "left field").to_dict()))
    assert d["category"] == "bookkeeping" and d["angle_before_deg"] is None
    assert _ev("si_lost", "Si", "left field", category="transformation").category == "transformation"  # explicit wins


def test_analyze_writes_category_on_every_event(tmp_path):
    from _dashboard_data import Lattice
    from engine.analyze import ResultWriter
    w = ResultWriter(tmp_path)
    w.write(Lattice(shape=(64, 64), n_si=1).result(5, events=[_ev("si_appeared", "outside field", "Si"),
                                                              _ev("si_3_to_4", "3-fold", "4-fold")], image=False))
    w.close()
    rows = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [r["category"] for r in rows] == ["bookkeeping", "transformation"]
    assert w.summary()["events_by_category"] == {"bookkeeping": 1, "transformation": 1}


def test_losing_many_tracks_at_once_is_bookkeeping_not_a_vacancy_per_atom():
    import numpy as np
    from _track_lattice import chemistry_of, make_movie

    from engine.track import Tracker
    from stemwatch.config import EventConfig

    mv = make_movie(n_frames=18, size_A=40.0, n_si=2, drift_A=(0.1, 0.0), seed=3)
    tr = Tracker(events=EventConfig())
    keep = np.random.default_rng(0).random(5000) > 0.4
    evs = []
    for t, (chem, _, shape) in enumerate(mv.frames):
        if 10 <= t < 15:                 # a burst of frames where 40 % of the C are not found (a dose dip)
            a = chem.atoms
            m = keep[:len(a)] | (np.asarray(a.species) != 0)
            chem = chemistry_of(a.xy_px[m], np.asarray(a.species)[m], a.pixel_size_A)
        evs += tr.update(chem, t, float(t), frame_shape=shape).events
    kinds = [e.kind for e in evs]
    assert "vacancy_created" not in kinds, kinds          # before: 46 vacancy_created
    resets = [e for e in evs if e.kind == "tracks_reset"]
    assert resets and all(e.category == "bookkeeping" for e in resets)
