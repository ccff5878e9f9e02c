"""Issue 15 criterion 3: ``new_motif`` once per new *kind* of defect, never for a known one."""

import numpy as np
import pytest

from engine.chem import MotifLibrary
from engine.chem.chemistry import chemistry_from_positions
from engine.track import Tracker
from engine.types import OTHER
from stemwatch.config import ChemistryConfig, EventConfig

st = pytest.importorskip("engine.sim.structures")

CC = ChemistryConfig()


def _sample():
    rng = np.random.default_rng(0)
    s = st.graphene((40.0, 40.0), rotation_deg=7.0, rng=rng)
    st.add_si3(s, s.nearest((15.0, 20.0)))
    st.add_vacancy(s, s.nearest((18.5, 20.0)))                 # a vacancy beside a Si: a new signature
    st.add_divacancy_585(s, s.nearest((28.0, 12.0)))
    st.add_stone_wales(s, s.nearest((28.0, 30.0)))
    st.add_si4(s, s.nearest((12.0, 31.0)))
    st.add_dimer(s, s.nearest((20.0, 33.0)))
    st.add_vacancy(s, s.nearest((8.0, 10.0)))
    return s, rng


def _run(tr, lib, s, rng, frames, seq0=0):
    evs, motifs = [], set()
    for t in range(frames):
        xy = s.xy_A + rng.normal(0, 0.05, s.xy_A.shape)
        chem = chemistry_from_positions(xy, s.species, CC, motifs=lib, frame_shape=(40.0, 40.0))
        motifs |= {(d.kind, d.motif) for d in chem.defects}
        evs += tr.update(chem, seq0 + t, 0.2 * (seq0 + t), frame_shape=(40.0, 40.0)).events
    return [e for e in evs if e.kind == "new_motif"], motifs


def test_known_defects_in_new_neighbourhoods_raise_no_new_motif():
    s, rng = _sample()
    lib = MotifLibrary(cfg=CC)
    evs, motifs = _run(Tracker(events=EventConfig()), lib, s, rng, 8)
    # the library does call the vacancy beside the Si (and that Si) "new motif k" by signature ...
    assert ("vacancy", "new motif 1") in motifs and any(k == "Si-3fold" and m.startswith("new motif")
                                                        for k, m in motifs)
    assert {k for k, _ in motifs} >= {"vacancy", "5-8-5", "Stone-Wales", "Si-3fold", "Si-4fold", "Si-dimer"}
    # ... but they are known kinds: no alarm
    assert evs == []


def test_an_unknown_kind_is_raised_once_per_session_with_its_atoms():
    # three heavy "other" substitutions: one alone, two second neighbours (2.46 A, not bonded): the
    # pair's neighbourhoods differ from the lone one's (two signatures), all are heavy-atom X1C3
    rng = np.random.default_rng(1)
    s = st.graphene((40.0, 40.0), rotation_deg=7.0, rng=rng)
    lone, a = s.nearest((12.0, 12.0)), s.nearest((26.0, 26.0))
    ia = s.index([a])[0]
    d = np.hypot(*(s.xy_A - s.xy_A[ia]).T)
    b = s.ids[np.argmin(np.abs(d - 2.46))]
    s.species[s.index([lone, a, b])] = OTHER
    lib = MotifLibrary(cfg=CC)
    tr = Tracker(events=EventConfig())
    evs, motifs = _run(tr, lib, s, rng, 8)
    heavy = [m for k, m in motifs if k == "heavy-atom"]
    assert len(set(heavy)) == 2 and all(m.startswith("new motif") for m in heavy)   # two signatures ...
    assert len(evs) == 1, [e.after for e in evs]                                     # ... one class, one event
    e = evs[0]
    assert "heavy-atom" in e.after and e.category == "transformation" and e.frame <= 3
    assert e.atom_ids and e.atom_id in e.atom_ids
    tr.reset()                                                  # a new series in the same session
    again, _ = _run(tr, lib, s, rng, 6, seq0=100)
    assert again == []
