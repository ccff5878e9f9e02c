"""lab.contamination_eval.score, the count behind issue 21 criterion 2's figures, on plain data."""

from types import SimpleNamespace

import numpy as np

from lab.contamination_eval import score


def _result(xy_px, species, border=None):
    atoms = SimpleNamespace(xy_px=np.asarray(xy_px, float), species=np.asarray(species, np.int8),
                            border=np.zeros(len(species), bool) if border is None else np.asarray(border, bool))
    return SimpleNamespace(chemistry=SimpleNamespace(atoms=atoms), health=SimpleNamespace(snr=30.0),
                           material=SimpleNamespace(is_graphene=True, mask=None, reason="graphene"))


def test_a_heavy_adatom_found_where_it_is_beside_contamination_is_not_a_false_si():
    """The sample (0.2 A/px): a lattice Si, a heavy adatom 2 A from a contamination atom, and a lattice C under
    another contamination atom. Reported: the Si, the adatom (species "other") where they are, and a Si on that C.
    Only the last is a false Si near contamination (until 2026-12-05 the adatom was counted too: on contaminated
    movie 147 it was 10 of the 11 "false Si")."""
    truth = SimpleNamespace(
        image=np.zeros((200, 200)), pixel_size_A=0.2,
        xy_px=np.array([[40.0, 40.0], [100.0, 100.0], [110.0, 100.0], [150.0, 150.0], [150.5, 150.0]]),
        species=np.array([1, 2, 0, 0, 0]),
        lattice=np.array([True, False, False, True, False]),
        z=np.array([14, 74, 6, 6, 6]))
    s = score(_result([[40.0, 40.0], [100.0, 100.0], [150.0, 150.0]], [1, 2, 1]), truth)
    assert s["false_si_near"] == 1, s
    assert s["si"] == 3 and s["true_si"] == 1 and s["true_si_kept"] == 1, s
    assert s["false_si_edge"] == 0, s
    # the adatom read where there is none is still false
    s = score(_result([[40.0, 40.0], [111.0, 104.0]], [1, 2]), truth)
    assert s["false_si_near"] == 1, s


def test_false_si_the_analyzer_flags_at_the_frames_edge_are_counted_apart():
    """Of the false Si near contamination, those flagged at the frame's edge (Atoms.border) are counted apart too."""
    truth = SimpleNamespace(
        image=np.zeros((200, 200)), pixel_size_A=0.2,
        xy_px=np.array([[2.0, 100.0], [2.5, 100.0], [100.0, 100.0], [100.5, 100.0]]),
        species=np.array([0, 0, 0, 0]), lattice=np.array([True, False, True, False]), z=np.array([6, 6, 6, 6]))
    s = score(_result([[2.0, 100.0], [100.0, 100.0]], [1, 1], border=[True, False]), truth)
    assert s["false_si_near"] == 2 and s["false_si_edge"] == 1, s
