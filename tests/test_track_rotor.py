"""Issue 15 criterion 2: a "rotor" event means the defect's orientation changed.

The simulator's rotor scenario (a Si3 cluster turning 120 degrees about its centre Si) and a static
cluster whose atoms jitter, tracked from the simulator's exact positions (plus detector-like
jitter) through the real chemistry and tracker.
"""


import numpy as np
import pytest

from engine.chem.chemistry import chemistry_from_positions
from engine.track import Tracker
from engine.track.orientation import orientation, turn
from stemwatch.config import ChemistryConfig, EventConfig, TrackingConfig

movie = pytest.importorskip("engine.sim.movie")

SPEC = movie.MovieSpec(n_frames=40, shape_px=(256, 256), pixel_size_A=0.1, dopants=("cluster",),
                       events=[(10, "rotor", 0), (25, "rotor", 0)], seed=3, drift_A_per_frame=(0.3, -0.2))


def _track(spec, events_cfg=None, heavy_jitter_A=0.0, seed=0):
    rng = np.random.default_rng(seed)
    tr = Tracker(TrackingConfig(), events_cfg or EventConfig())
    cc = ChemistryConfig()
    H, W = spec.shape_px
    shape_A = (H * spec.pixel_size_A, W * spec.pixel_size_A)
    evs = []
    for _, fr in movie.simulate_movie(spec):
        xy = fr.xy_A.copy()
        heavy = fr.species != 0
        xy[heavy] += rng.normal(0, heavy_jitter_A, (int(heavy.sum()), 2))     # localisation error
        chem = chemistry_from_positions(xy, fr.species, cc, frame_shape=shape_A)
        evs += tr.update(chem, fr.seq, 0.2 * fr.seq, frame_shape=shape_A).events
    return evs


def test_orientation_of_a_turned_cluster_and_of_a_symmetric_one():
    pivot, arm = np.zeros(2), 1.8
    arms = lambda degs: [pivot] + [arm * np.array([np.cos(np.radians(d)), np.sin(np.radians(d))]) for d in degs]
    a0, p = orientation(np.array(arms([0, 120])))
    assert p == 360 and a0 == pytest.approx(60.0)
    assert turn(np.array(arms([0, 120])), np.array(arms([120, 240])))[2] == pytest.approx(120.0)
    assert turn(np.array(arms([0, 120])), np.array(arms([2, 118])))[2] < 5
    # three arms at 120 degrees: no direction at all, so it can never be said to rotate
    assert orientation(np.array(arms([0, 120, 240])))[0] is None
    assert turn(np.array(arms([0, 120, 240])), np.array(arms([60, 180, 300])))[2] == 0.0


def test_simulated_rotor_steps_raise_rotor_events_with_their_angles():
    evs = [e for e in _track(SPEC) if e.kind == "rotor"]
    assert [e.frame - f for e, f in zip(evs, (10, 25))] and len(evs) == 2
    for e, f in zip(evs, (10, 25)):
        assert 0 <= e.frame - f <= 2 and e.category == "transformation"
        d = abs((e.angle_after_deg - e.angle_before_deg + 180) % 360 - 180)
        assert 100 < d < 140                                   # the 120 degree step
        assert e.before.endswith(f"at {e.angle_before_deg:.0f} deg") and e.after.endswith(f"at {e.angle_after_deg:.0f} deg")


def _static_cluster(events_cfg=None, n_frames=300, heavy_jitter_A=0.2, seed=1):
    """A Si3 cluster that never moves; every atom jitters (0.05 A), the Si by ``heavy_jitter_A`` more."""
    from engine.sim import structures as st
    rng = np.random.default_rng(seed)
    s = st.graphene((26.0, 26.0), rotation_deg=11.0, rng=rng)
    st.add_cluster(s, s.nearest((13.0, 13.0)), 3)
    tr = Tracker(TrackingConfig(), events_cfg or EventConfig())
    cc = ChemistryConfig()
    heavy = s.species != 0
    evs = []
    for t in range(n_frames):
        xy = s.xy_A + 1.5 + rng.normal(0, 0.05, s.xy_A.shape)
        xy[heavy] += rng.normal(0, heavy_jitter_A, (int(heavy.sum()), 2))
        chem = chemistry_from_positions(xy, s.species, cc, frame_shape=(29.0, 29.0))
        evs += tr.update(chem, t, 0.2 * t, frame_shape=(29.0, 29.0)).events
    return evs


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_static_cluster_with_jittering_atoms_raises_no_rotor(seed):
    # localisation noise of 0.2 A on the Si makes the cluster's three Si tracks swap often (before
    # issue 15 this static cluster raised a "rotor" Si3C5 -> Si3C5 every ~20 frames, i.e. ~15 times in
    # seed 1's 300 frames); seed 2, the same check on other noise, runs with -m slow
    evs = _static_cluster(seed=seed)
    assert [e for e in evs if e.kind == "rotor"] == [], seed


def test_a_pair_has_an_axis_whatever_the_order_of_its_atoms():
    a, b = np.array([0.0, 0.0]), np.array([2.8, 0.3])
    assert orientation(np.array([a, b]))[0] == pytest.approx(orientation(np.array([b, a]))[0])
    assert orientation(np.array([a, b]))[1] == 180
    assert turn(np.array([a, b]), np.array([b, a]))[2] == pytest.approx(0.0)


def test_an_unusable_frame_is_not_observed():
    from types import SimpleNamespace

    from engine.track.rotor import RotorMachine

    pivot = np.zeros(2)
    arms = lambda degs: np.array([pivot] + [1.8 * np.array([np.cos(np.radians(d)), np.sin(np.radians(d))])
                                            for d in degs])
    d = [SimpleNamespace(members=np.arange(3))]
    sp = np.array([1, 1, 1])
    m = RotorMachine()
    for seq in range(4):
        assert m.step(d, sp, arms([0, 120]) + 10, seq, 3, 4, 45.0) == []
    # three turned frames, but two of them are glitches: nothing is confirmed ...
    assert [m.step(d, sp, arms([120, 240]) + 10, 4 + i, 3, 4, 45.0, usable=i == 0) for i in range(3)] == [[]] * 3
    # ... while three usable turned frames confirm the turn
    got = [m.step(d, sp, arms([120, 240]) + 10, 7 + i, 3, 4, 45.0) for i in range(3)]
    assert sum(len(g) for g in got) == 1


def test_one_event_per_turn_when_part_of_the_cluster_is_also_described_as_a_group():
    """The lattice graph sometimes also names part of a Si3 cluster (two of its Si) as a group of its
    own. That must not leave a second 'place' for the cluster: a stale place nearby took the next
    observation and a turn was adopted silently (missed, seen on held-out movies) or reported again
    from an old orientation (a duplicate)."""
    from types import SimpleNamespace

    from engine.track.rotor import RotorMachine

    for seed in range(10):
        rng = np.random.default_rng(seed)
        base, orient, seq, m = rng.uniform(0, 360), 0.0, 0, RotorMachine()
        got, steps = 0, 0
        for step in range(7):
            if step:
                orient += rng.choice([-120.0, 120.0])
                steps += 1
            for _ in range(8):
                pts = np.array([[0.0, 0.0]] + [2.3 * np.array([np.cos(np.radians(d)), np.sin(np.radians(d))])
                                                for d in (base + orient, base + orient + 120)]) + 20.0
                pts += rng.normal(0, 0.1, pts.shape)
                defects = [SimpleNamespace(members=np.arange(3))]
                if rng.random() < 0.2:
                    defects.insert(0, SimpleNamespace(members=np.sort(rng.choice(3, 2, replace=False))))
                got += len(m.step(defects, np.ones(3), pts, seq, 3, 4, 45.0))
                seq += 1
        assert got == steps, (seed, got, steps)


def test_the_turn_is_reported_on_the_cluster_not_on_a_vacancy_sharing_its_atoms():
    """A C missing beside a Si3 cluster: the graph names a 'vacancy V1' whose ring holds the three
    Si (listed first, centred on the vacancy 2.5 A away) and the Si3C4 cluster itself. The turn is
    the cluster's: its formula and centre (seed 979001/979008 frame 78: the rotor was reported at
    the vacancy's centre, 3 A from the cluster, so it counted as a miss and a false alarm)."""
    from types import SimpleNamespace

    from engine.track.rotor import RotorMachine

    pivot = np.array([20.0, 20.0])
    arms = lambda degs: np.array([pivot] + [pivot + 1.8 * np.array([np.cos(np.radians(d)), np.sin(np.radians(d))])
                                            for d in degs])
    sp = np.array([1, 1, 1, 0, 0, 0, 0])                       # three Si, four C (one beside the vacancy)
    c_xy = pivot + np.array([[0.0, -2.6], [1.2, -3.3], [-1.2, -3.3], [0.0, 2.0]])
    defects = [SimpleNamespace(members=np.arange(7), formula="V1", centre_px=(20.0, 17.5)),
               SimpleNamespace(members=np.array([0, 1, 2, 6]), formula="Si3C4", centre_px=(20.0, 20.2))]
    m = RotorMachine()
    got = []
    for seq in range(12):
        pts = np.vstack([arms([0, 120] if seq < 5 else [120, 240]), c_xy])
        got += m.step(defects, sp, pts, seq, 3, 4, 45.0)
    assert len(got) == 1 and defects[got[0].defect].formula == "Si3C4", got
