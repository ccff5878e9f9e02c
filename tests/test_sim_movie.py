"""Simulated movies: truth agrees with geometry, every event is the change it claims, reproducible."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from engine.sim import structures as st
from engine.sim.movie import MovieSpec, run_movie, scenario
from engine.sim.truth import load_truth, save_truth, truth_path
from engine.types import C, SI

CUT = {0: 1.9, 1: 2.2, 2: 2.6}      # C-C, Si-C, Si-Si (structures.coordination defaults)

EVENTS = [(2, "si_3_to_4", 0), (3, "vacancy_created", None), (4, "dimer_formed", 2), (5, "rotor", 3),
          (6, "si_hop", 1), (7, "flicker", 1), (8, "si_4_to_3", 0), (9, "dimer_broken", 2), (10, "rotor", 3)]


@pytest.fixture(scope="module")
def movie():
    spec = MovieSpec(n_frames=12, shape_px=(288, 288), pixel_size_A=0.11, dopants=("si3", "si3", "pair", "cluster"),
                     first_dopant_centre=False, min_separation_A=8.5, drift_A_per_frame=(0.3, -0.2),
                     events=EVENTS, seed=7)
    return run_movie(spec)


def _sample_xy(fr):
    """Frame truth positions in sample coordinates (A)."""
    return {int(i): fr.xy_A[j] + fr.origin_A for j, i in enumerate(fr.ids)}


def _interior(fr, shape, ps, margin_A=3.0):
    h, w = shape
    m = margin_A / ps
    return (fr.xy_px[:, 0] > m) & (fr.xy_px[:, 0] < w - 1 - m) & (fr.xy_px[:, 1] > m) & (fr.xy_px[:, 1] < h - 1 - m)


def test_coordination_in_truth_agrees_with_geometry(movie):
    imgs, gt = movie
    ps, shape = gt.pixel_size_A, imgs.shape[1:]
    lattice_labels = [st.LABEL[n] for n in st.LABELS if n not in ("contamination", "adatom")]
    for fr in gt.frames:
        lat = np.isin(fr.label, lattice_labels)
        xy, sp = fr.xy_A[lat], fr.species[lat]
        pairs = cKDTree(xy).query_pairs(2.6, output_type="ndarray")
        d = np.linalg.norm(xy[pairs[:, 0]] - xy[pairs[:, 1]], axis=1)
        lim = np.array([CUT[k] for k in range(3)])[sp[pairs[:, 0]].astype(int) + sp[pairs[:, 1]]]
        ok = pairs[d < lim]
        n = np.bincount(ok.ravel(), minlength=len(xy))
        inner = _interior(fr, shape, ps)[lat]
        # coordination is the bonding state (before thermal jitter): the jittered geometry agrees
        # except for the rare pair that 0.05 A of jitter carries across a cutoff
        agree = n[inner] == fr.coordination[lat][inner]
        assert agree.mean() > 0.995
        si = fr.species == SI
        assert set(fr.coordination[si & _interior(fr, shape, ps)].tolist()) <= {3, 4}


def test_structures_have_clear_bonds_without_jitter():
    _, gt = run_movie(MovieSpec(n_frames=11, shape_px=(288, 288), pixel_size_A=0.11, thermal_jitter_A=0.0,
                                dopants=("si3", "si3", "pair", "cluster"), first_dopant_centre=False,
                                min_separation_A=8.5, events=EVENTS, seed=7))
    for fr in gt.frames:
        xy, sp = fr.xy_A, fr.species
        pairs = cKDTree(xy).query_pairs(2.8, output_type="ndarray")
        d = np.linalg.norm(xy[pairs[:, 0]] - xy[pairs[:, 1]], axis=1)
        lim = np.array([CUT[k] for k in range(3)])[sp[pairs[:, 0]].astype(int) + sp[pairs[:, 1]]]
        assert np.abs(d - lim).min() > 0.1                          # no bond is ambiguous
        c = np.bincount(pairs[d < lim].ravel(), minlength=len(xy))
        inner = _interior(fr, (288, 288), gt.pixel_size_A)
        assert np.array_equal(c[inner], fr.coordination[inner])      # truth = geometry, exactly


def _coord(fr, atom):
    j = np.flatnonzero(fr.ids == atom)
    return int(fr.coordination[j[0]]) if len(j) else None


def test_every_event_is_the_change_in_the_structure(movie):
    imgs, gt = movie
    kinds = sorted({e["kind"] for e in gt.events})
    assert kinds == sorted({"si_3_to_4", "si_4_to_3", "si_hop", "vacancy_created", "dimer_formed", "dimer_broken",
                            "rotor", "flicker"})
    frames = {f.seq: f for f in gt.frames}
    later_ids = {f.seq: set().union(*[set(g.ids.tolist()) for g in gt.frames if g.seq >= f.seq]) for f in gt.frames}
    for e in gt.events:
        f, a = e["frame"], e["atom_id"]
        prev, cur = frames[f - 1], frames[f]
        p0, p1 = _sample_xy(prev), _sample_xy(cur)
        k = e["kind"]
        if k in ("si_3_to_4", "si_4_to_3"):
            b, c = (3, 4) if k == "si_3_to_4" else (4, 3)
            assert (_coord(prev, a), _coord(cur, a)) == (b, c)
            if k == "si_3_to_4":
                (gone,) = e["ejected"]
                assert gone in p0 and gone not in later_ids[f]
            else:
                (new,) = e["arrived"]
                assert new not in p0 and new in p1 and cur.species[cur.ids == new][0] == C
            assert np.hypot(*(p1[a] - p0[a])) < 1.0                    # moves into / out of the divacancy
        elif k == "si_hop":
            assert 1.0 < np.hypot(*(p1[a] - p0[a])) < 2.2
            assert cur.species[cur.ids == a][0] == SI
        elif k == "vacancy_created":
            assert a in p0 and a not in later_ids[f]
            nb = [i for i, xy in p0.items() if 0 < np.hypot(*(xy - p0[a])) < 1.7]
            assert len(nb) == 3 and all(_coord(cur, i) == 2 for i in nb)
        elif k in ("dimer_formed", "dimer_broken"):
            s1, s2 = e["members"]
            d0, d1 = np.hypot(*(p0[s1] - p0[s2])), np.hypot(*(p1[s1] - p1[s2]))
            if k == "dimer_formed":
                assert d0 > 2.6 and d1 < 2.0
            else:
                assert d0 < 2.0 and d1 > 2.6
        elif k == "rotor":
            centre, *ring = e["members"]
            assert np.hypot(*(p1[centre] - p0[centre])) < 0.5
            moved = [np.hypot(*(p1[i] - p0[i])) for i in ring]
            assert all(2.8 < m < 4.0 for m in moved)
            sis = [i for i in ring if cur.species[cur.ids == i][0] == SI]
            assert len(sis) == 2
        elif k == "flicker":
            nxt = frames[f + 1]
            assert _coord(prev, a) == _coord(cur, a) == _coord(nxt, a)
            assert np.hypot(*(p1[a] - p0[a])) < 0.5
    # and nothing else changes: between frames without events, interior ids and species are identical
    ev_frames = {e["frame"] for e in gt.events if e["kind"] != "flicker"}
    ps, shape = gt.pixel_size_A, imgs.shape[1:]
    for f in range(1, len(gt.frames)):
        prev, cur = frames[f - 1], frames[f]
        inner = _interior(prev, shape, ps, 4.0)
        gone = set(prev.ids[inner].tolist()) - set(cur.ids.tolist())
        if f not in ev_frames:
            assert not gone
        sp0 = dict(zip(prev.ids.tolist(), prev.species.tolist()))
        changed = [i for i, s in zip(cur.ids.tolist(), cur.species.tolist()) if i in sp0 and sp0[i] != s]
        assert not changed                                             # species follow the atom


def test_event_positions_are_where_the_atom_is(movie):
    imgs, gt = movie
    for e in gt.events:
        fr = gt.frames[e["frame"]]
        j = np.flatnonzero(fr.ids == e["atom_id"])
        if len(j):
            assert np.allclose(fr.xy_px[j[0]], [e["x"], e["y"]])
        assert np.isclose(e["x_A"], e["x"] * gt.pixel_size_A)


def test_flicker_is_one_dim_frame(movie):
    imgs, gt = movie
    (e,) = gt.events_of("flicker")
    f = e["frame"]
    x, y = int(round(e["x"])), int(round(e["y"]))
    bright = [imgs[g, y - 3:y + 4, x - 3:x + 4].astype(float).mean() for g in (f - 1, f)]
    assert bright[1] < 0.8 * bright[0]


def test_ids_are_unique_and_drift_moves_the_field(movie):
    imgs, gt = movie
    for fr in gt.frames:
        assert len(np.unique(fr.ids)) == len(fr.ids)
    o = np.array([fr.origin_A for fr in gt.frames])
    step = np.diff(o, axis=0)
    assert np.all(np.hypot(*step.T) > 0.1) and np.all(np.hypot(*step.T) < 1.0)


def test_same_seed_same_movie_and_other_seed_differs():
    spec = scenario("lowdose", n_frames=4, shape_px=(96, 96), dopants=("si3",), events=[(2, "si_hop", 0)])
    a, ga = run_movie(spec)
    b, gb = run_movie(spec)
    c, gc = run_movie(scenario("lowdose", n_frames=4, shape_px=(96, 96), dopants=("si3",), seed=99,
                               events=[(2, "si_hop", 0)]))
    assert np.array_equal(a, b) and ga.events == gb.events
    assert all(np.array_equal(x.xy_px, y.xy_px) and np.array_equal(x.ids, y.ids) for x, y in zip(ga.frames, gb.frames))
    assert not np.array_equal(a, c)


def test_truth_round_trip(tmp_path, movie):
    imgs, gt = movie
    p = save_truth(gt, tmp_path / "m.swrec")
    assert p == tmp_path / "m.truth.npz" and truth_path(tmp_path / "m.swrec") == p
    back = load_truth(tmp_path / "m.swrec")
    assert back.events == gt.events and back.pixel_size_A == gt.pixel_size_A
    for x, y in zip(gt.frames, back.frames):
        for k in ("xy_px", "xy_A", "species", "ids", "coordination", "label", "origin_A"):
            assert np.array_equal(np.asarray(getattr(x, k)), np.asarray(getattr(y, k)))
        assert x.events == y.events
    with np.load(p, allow_pickle=False) as z:                          # plain arrays, no pickle
        assert {"offsets", "xy_px", "ids", "coordination"} <= set(z.files)
    with pytest.raises(FileNotFoundError):
        load_truth(tmp_path / "none.swrec")


def test_impossible_script_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot have event"):
        run_movie(MovieSpec(n_frames=3, shape_px=(96, 96), events=[(1, "si_4_to_3", 0)]))
    with pytest.raises(ValueError, match="unknown event kind"):
        run_movie(MovieSpec(n_frames=3, shape_px=(96, 96), events=[(1, "explode", 0)]))


def test_random_events_follow_the_structure():
    spec = scenario("random", n_frames=30, shape_px=(288, 288), dopants=("si3", "si4", "pair"), drift_A_per_frame=(0.1, 0.05),
                    event_rate_per_frame=0.6, min_event_gap_frames=3, seed=4)
    imgs, gt = run_movie(spec)
    assert imgs.dtype == np.uint16 and len(gt.events) >= 5
    frames = {f.seq: f for f in gt.frames}
    for e in gt.events:
        if e["kind"] in ("si_3_to_4", "si_4_to_3"):
            b, c = (3, 4) if e["kind"] == "si_3_to_4" else (4, 3)
            assert (_coord(frames[e["frame"] - 1], e["atom_id"]), _coord(frames[e["frame"]], e["atom_id"])) == (b, c)


@pytest.mark.parametrize("kind, label", [("adatom", "adatom"), ("contamination", "contamination")])
def test_static_extras_added_over_the_sheet_are_in_every_frame(kind, label):
    """An adatom or a contamination patch placed with the sample (``MovieSpec.extras``) is part of
    the movie's structure and its truth (its atoms had no place in the occupancy: KeyError)."""
    frames, gt = run_movie(MovieSpec(n_frames=3, extras=(kind,), seed=3))
    assert frames.shape[0] == 3
    n = [int((f.label == st.LABEL[label]).sum()) for f in gt.frames]
    assert n[0] >= 1 and len(set(n)) == 1, n


def test_walking_contamination_moves_only_the_contamination_and_leaves_the_default_as_it_was():
    """MaterialMovie's ``contamination_step_A``: with steps of 0.5 A the contamination atoms of a graphene_hole
    field (contamination forced) move between frames by about 0.5 x sqrt(2) A RMS, while every lattice atom stays
    put (the field is static) and each atom keeps its id; the default and an explicit 0 render the same frames, and
    a walking movie's first frame is the static one's (the walk has a stream of its own, spawned after the others,
    so the default movies are those of the code before the option: checked against it by hash, 2026-12-05); a
    negative step is a clear error."""
    from engine.sim.materials import MaterialMovie

    spec = MovieSpec(n_frames=3, shape_px=(128, 128), pixel_size_A=0.2, drift_A_per_frame=(0.0, 0.0),
                     drift_bound_A=0.0, seed=7)

    def movie(**kw):
        return list(MaterialMovie(spec, "graphene_hole", contamination=True, **kw).frames())

    static, still, walking = movie(), movie(contamination_step_A=0.0), movie(contamination_step_A=0.5)
    for (a, ta), (b, tb) in zip(static, still):
        assert np.array_equal(a, b) and np.array_equal(ta.xy_px, tb.xy_px)
    assert np.array_equal(static[0][0], walking[0][0])          # the first frame: before any step
    cont_label = st.LABEL["contamination"]
    for f in (1, 2):
        t0, t1 = walking[f - 1][1], walking[f][1]
        common, i0, i1 = np.intersect1d(t0.ids, t1.ids, return_indices=True)
        moved = np.hypot(*((t1.xy_px[i1] - t0.xy_px[i0]) * 0.2).T)
        cont = t1.label[i1] == cont_label
        assert cont.sum() >= 20, cont.sum()
        assert np.allclose(moved[~cont], 0.0)                    # lattice and dopants stay put
        rms = float(np.sqrt(np.mean(moved[cont] ** 2)))
        assert 0.5 < rms < 0.9, rms                               # 0.5 x sqrt(2) = 0.71 A expected
    assert not np.array_equal(static[1][0], walking[1][0])
    with pytest.raises(ValueError, match="contamination_step_A"):
        MaterialMovie(spec, "graphene_hole", contamination_step_A=-1.0)
