"""The part of a frame left out of the analysis (a hole, amorphous carbon, contamination: the material
verdict's mask) is beyond the field's edge for the tracker: an atom that a growing region covers has
left the field, not the sample (issue 21 criterion 2: the masks made no events of their own)."""

import numpy as np

from engine.track import Tracker
from engine.track.snapshot import LeftOut
from engine.types import SI
from stemwatch.config import EventConfig, TrackingConfig

from _track_lattice import chemistry_of, make_movie

RADII_A = [0, 0, 0, 0, 0, 0, 2, 4, 6, 8, 8, 8, 8, 8, 8, 8, 6, 4, 2, 0, 0, 0, 0, 0, 0]


def _covered_movie(pass_mask: bool):
    """A static field with a left-out disc around one dopant that grows to 8 A and shrinks back (as a
    contamination region's edge moves): the atoms inside it are not found (``mask_probabilities``)."""
    mv = make_movie(n_frames=len(RADII_A), size_A=40.0, drift_A=(0.0, 0.0), drift_walk_A=0.0, p_miss=0.0,
                    p_spurious=0.0, n_si=3, seed=3)
    ps = mv.ps
    chem0 = mv.frames[0][0]
    si0 = np.flatnonzero(np.asarray(chem0.atoms.species) == SI)[0]
    centre_px = np.asarray(chem0.atoms.xy_px)[si0]
    tr = Tracker(TrackingConfig(), EventConfig())
    events, ids = [], []
    for i, ((chem, gid, shape), r_A) in enumerate(zip(mv.frames, RADII_A)):
        yy, xx = np.mgrid[:shape[0], :shape[1]]
        analysed = np.hypot(xx - centre_px[0], yy - centre_px[1]) * ps >= r_A
        xy = np.asarray(chem.atoms.xy_px)
        keep = np.hypot(*(xy - centre_px).T) * ps >= r_A
        sub = chemistry_of(xy[keep], np.asarray(chem.atoms.species)[keep], ps)
        u = tr.update(sub, i, 1000.0 + i, frame_shape=shape, analysed=analysed if pass_mask else None)
        events += u.events
        ids.append(dict(zip(np.asarray(gid)[keep].tolist(), u.track_ids.tolist())))
    return events, ids, tr


def test_atoms_a_growing_left_out_region_covers_have_left_the_field():
    events, ids, tr = _covered_movie(pass_mask=True)
    # nothing happened to the sample: no transformation, and no tracks "lost at once" either
    assert not [e for e in events if e.category == "transformation" or e.kind == "tracks_reset"], events
    # the atoms that come back out keep their identity (parked as at the frame's edge, revived)
    first, last = ids[0], ids[-1]
    same = [g for g in first if g in last]
    assert len(same) > 500 and sum(first[g] == last[g] for g in same) >= 0.99 * len(same)
    assert tr.revived > 10


def test_without_the_region_the_same_atoms_are_lost_from_the_sample():
    """The same detections with the analysed part not passed (the tracker before): the dopant is
    'ejected' and the covered atoms are tracks lost at once -- the events the test above must not see."""
    events, _, _ = _covered_movie(pass_mask=False)
    kinds = {(e.kind, e.after) for e in events}
    assert ("si_lost", "ejected") in kinds and ("tracks_reset", "lost at once") in kinds, events


def test_left_out_distance_is_signed_and_none_for_a_whole_field():
    ps = 0.2
    analysed = np.ones((100, 120), bool)
    assert LeftOut.of(analysed, ps) is None and LeftOut.of(None, ps) is None
    analysed[:, 60:] = False                              # the right half left out: x >= 12 A
    lo = LeftOut.of(analysed, ps)
    d = lo.distance(np.array([[2.0, 10.0], [11.0, 10.0], [13.0, 10.0], [20.0, 10.0], [-5.0, 10.0]]))
    assert np.allclose(d, [10.0, 1.0, -1.0, -8.0, 12.0], atol=lo.cell_A)
