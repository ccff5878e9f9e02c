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
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

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


def off_lattice(chem, radius_A: float = RADIUS_A) -> np.ndarray:
    """Indices of the heavy atoms of ``chem`` (:class:`engine.types.Chemistry`) with no atom that is a
    member of one of its rings (``chem.rings``) within ``radius_A``; empty when there are no heavy atoms
    or fewer than :data:`MIN_RING_ATOMS` ring members."""
    none = np.zeros(0, np.int64)
    sp = np.asarray(chem.atoms.species)
    heavy = np.flatnonzero(sp != 0)
    if not len(heavy) or not len(chem.rings):
        return none
    member = np.zeros(len(sp), bool)
    flat = getattr(chem.rings, "atoms", None)          # engine.chem.graph.RingList: the members stored flat
    member[np.asarray(flat, np.int64) if flat is not None else
           np.concatenate([np.asarray(r, np.int64) for r in chem.rings])] = True
    if member.sum() < MIN_RING_ATOMS:
        return none
    heavy = heavy[~member[heavy]]                  # a ring member is on the lattice by definition
    if len(heavy):                                 # and so is an atom bonded to one (a Si at a hole's edge)
        b = np.asarray(chem.bonds, np.int64).reshape(-1, 2)
        bonded = np.zeros(len(sp), bool)
        bonded[b[member[b[:, 1]], 0]] = True
        bonded[b[member[b[:, 0]], 1]] = True
        heavy = heavy[~bonded[heavy]]
    if not len(heavy):
        return none
    xy = np.asarray(chem.atoms.xy_px, np.float64).reshape(-1, 2)
    r_px = radius_A / float(chem.atoms.pixel_size_A)
    d = cKDTree(xy[member]).query(xy[heavy], distance_upper_bound=r_px)[0]
    return heavy[~np.isfinite(d)]


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
