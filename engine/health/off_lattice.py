"""Heavy atoms on no graphene: a "Si" that no ring of the lattice graph comes near (issue 21, criterion 2).

Contamination floating in a hole, and heavy atoms on it, are not graphene, yet the network reads their
brightest clusters as Si (or as other heavy atoms) and the Fourier mask keeps them: a hole's rim grows
the graphene region by two cells, and contamination in the hole is not vacuum. On the contaminated
development movies (``MaterialMovie("graphene_hole")``, seeds 30-45, static, 512^2 at 0.2 A/px) such Si lay
8.5-8.9 A from the nearest atom in a ring of the graph, while every true Si (2,150, at hole edges with
one or two neighbours too) had one within 1.79 A: its own rings, or the ring of the edge C it is bonded to.
A lattice atom whose three neighbours are all missed still has its second neighbours (2.46 A), in rings;
on the development frames of lab.contamination_eval (seed 81: contaminated, clean with holes, dense Si
under a wide tail) the farthest true Si, at a hole's edge with one neighbour, measured 2.61 A.

:func:`off_lattice` gives the heavy atoms (species not C) with no ring member within
:data:`RADIUS_A`; the pipeline leaves a disc of :data:`DISC_A` around each out of the analysis, as it
leaves out the other parts that are not graphene (the material verdict's mask). Plain numpy / scipy:
the ring members and their bonded atoms are on the lattice (two boolean passes); a KD-tree of the ring
members only for a heavy atom that is neither; nothing on a frame without heavy atoms.

:func:`unbonded_dim` gives the heavy atoms nearer a ring than that but bonded to none of its members, whose
column is dimmer than a Si can be: contamination at a hole's rim, read as Si because its floor is the hole's
(held-out-then-seen movies 159-170, 2026-12-05: 36 such "Si", 1.0-2.0 C contrasts, 1-3 atoms within 3 A;
every true Si of the same data that is in no ring and bonded to none read >= 4.1 C contrasts).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from engine.chem.atoms import sample_bilinear
from engine.chem.quantile import median

#: a heavy atom with no ring member within this (A) is on no graphene: beyond a second neighbour (2.46 A)
#: and a Si at the end of a two-atom chain on a hole's edge (Si-C 1.8 + C-C 1.45 A); true Si of the
#: development frames and movies measured <= 2.61 A (seed 82, coordination 1 at a hole), the "Si" on no
#: graphene >= 8.5 A
RADIUS_A = 3.5
#: radius (A) of the disc left out around each: short of the nearest ring member (>= RADIUS_A), so no
#: lattice atom is left out with it
DISC_A = 1.5
#: a frame with fewer ring members than this is not judged (no lattice graph to measure against)
MIN_RING_ATOMS = 30
#: :func:`unbonded_dim`: a heavy atom in no ring and bonded to no ring member whose net contrast (``sm - bg`` of
#: :func:`engine.chem.maps.contrast_maps`) is below this many times the median ring C's is contamination, not a
#: heavy atom: a Si column is (14/6)^gamma = 3.3-5.4 C columns (gamma 1.4-2.0;
#: engine.health.material_overlayer.SI_MAX_NET: the same bound). At a hole's rim the floor ``bg`` is the
#: vacuum's, below the lattice's, which makes such an atom read brighter, never dimmer. Development (the seen
#: movies 159-170, contaminated frames 8158/8161, wide-tail frames 8155-8163, dopant frames 5213-5216;
#: 2026-12-05, third session): 36 false Si at 1.0-2.0, none of the 16,069 true Si; at 2.0 the same. 0: off
DIM_MAX_NET = 3.0
#: ... on frames of C-atom SNR at least this (material_overlayer.SI_MIN_SNR: column contrasts are read there)
DIM_MIN_SNR = 12.0
#: ... against the median of about this many evenly strided C ring members
DIM_REF_ATOMS = 128


def off_lattice(chem, radius_A: float = RADIUS_A) -> np.ndarray:
    """Indices of the heavy atoms of ``chem`` (:class:`engine.types.Chemistry`) with no atom that is a
    member of one of its rings (``chem.rings``) within ``radius_A``; empty when there are no heavy atoms
    or fewer than :data:`MIN_RING_ATOMS` ring members."""
    heavy, member = _unbonded_heavy(chem)
    if not len(heavy):
        return heavy
    xy = np.asarray(chem.atoms.xy_px, np.float64).reshape(-1, 2)
    r_px = radius_A / float(chem.atoms.pixel_size_A)
    d = cKDTree(xy[member]).query(xy[heavy], distance_upper_bound=r_px)[0]
    return heavy[~np.isfinite(d)]


def unbonded_dim(chem, maps, snr: float, radius_A: float = RADIUS_A) -> np.ndarray:
    """Indices of the heavy atoms of ``chem`` that are members of none of its rings, bonded to no member, within
    ``radius_A`` of a member (farther ones are :func:`off_lattice`'s), whose column reads dimmer than
    :data:`DIM_MAX_NET` x the median C ring member's (net contrast on ``maps``, the frame's
    :func:`engine.chem.maps.contrast_maps`); empty below :data:`DIM_MIN_SNR` or with the rule off."""
    heavy, member = _unbonded_heavy(chem)
    if not (DIM_MAX_NET > 0 and snr >= DIM_MIN_SNR and len(heavy)):
        return heavy[:0]
    sp = np.asarray(chem.atoms.species)
    ref = np.flatnonzero(member & (sp == 0))
    if len(ref) < MIN_RING_ATOMS:
        return heavy[:0]
    ref = ref[:: max(1, len(ref) // DIM_REF_ATOMS)]
    xy = np.asarray(chem.atoms.xy_px, np.float64).reshape(-1, 2)
    near = np.isfinite(cKDTree(xy[member]).query(xy[heavy], distance_upper_bound=radius_A / float(
        chem.atoms.pixel_size_A))[0])
    heavy = heavy[near]
    if not len(heavy):
        return heavy
    sm, bg, _pxd, f = maps[:4]
    p = xy[np.concatenate([ref, heavy])]
    s_sm, s_bg = sample_bilinear((sm, bg), (p[:, 1] + 0.5) / f - 0.5, (p[:, 0] + 0.5) / f - 0.5)
    net = s_sm - s_bg
    c_level = median(net[:len(ref)])
    if not c_level > 0:
        return heavy[:0]
    return heavy[net[len(ref):] < DIM_MAX_NET * c_level]


def _unbonded_heavy(chem) -> tuple[np.ndarray, np.ndarray]:
    """(the heavy atoms of ``chem`` that are members of none of its rings and bonded to no member, the ring
    members as a bool per atom); no atoms when there are no heavy atoms or fewer than :data:`MIN_RING_ATOMS`
    members."""
    sp = np.asarray(chem.atoms.species)
    member = np.zeros(len(sp), bool)
    heavy = np.flatnonzero(sp != 0)
    if not len(heavy) or not len(chem.rings):
        return heavy[:0], member
    flat = getattr(chem.rings, "atoms", None)          # engine.chem.graph.RingList: the members stored flat
    member[np.asarray(flat, np.int64) if flat is not None else
           np.concatenate([np.asarray(r, np.int64) for r in chem.rings])] = True
    if member.sum() < MIN_RING_ATOMS:
        return heavy[:0], member
    heavy = heavy[~member[heavy]]                  # a ring member is on the lattice by definition
    if len(heavy):                                 # and so is an atom bonded to one (a Si at a hole's edge)
        b = np.asarray(chem.bonds, np.int64).reshape(-1, 2)
        bonded = np.zeros(len(sp), bool)
        bonded[b[member[b[:, 1]], 0]] = True
        bonded[b[member[b[:, 0]], 1]] = True
        heavy = heavy[~bonded[heavy]]
    return heavy, member


def discs(xy_px: np.ndarray, shape: tuple[int, int], radius_px: float) -> np.ndarray:
    """Frame-shaped bool: discs of ``radius_px`` around ``xy_px`` (N, 2; x y)."""
    out = np.zeros(shape, bool)
    r = int(np.ceil(radius_px))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    inside = dx * dx + dy * dy <= radius_px * radius_px
    dy, dx = dy[inside], dx[inside]
    c = np.rint(np.asarray(xy_px, float).reshape(-1, 2)).astype(np.int64)
    rows = (c[:, 1:2] + dy[None]).ravel()
    cols = (c[:, 0:1] + dx[None]).ravel()
    ok = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    out[rows[ok], cols[ok]] = True
    return out
