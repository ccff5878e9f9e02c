"""Atomic structures of Si-doped graphene as plain arrays.

All lengths are in angstrom. A :class:`Sample` is a flat list of atoms (positions, species codes
of :data:`engine.types.SPECIES`, atomic numbers, ids that follow each physical atom) plus per-atom
defect labels. Defects are placed by small functions that edit a sample in place and return the
ids of the atoms they involve.

Geometry (sources in docs/simulator.md): graphene a = 2.46 A, C-C 1.42 A; substitutional 3-fold
Si with Si-C about 1.75-1.8 A (its three C neighbours pushed outward); 4-fold Si in a divacancy,
Si-C about 1.9 A (a consequence of the divacancy geometry).

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> s = graphene((40.0, 40.0), rotation_deg=10.0, rng=rng)
>>> sid = add_si3(s, s.nearest((20.0, 20.0)))
>>> int((s.species == SI).sum())
1
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from engine.types import C, OTHER, SI

A_LATTICE_A = 2.46
CC_BOND_A = 1.42
SI_C_3FOLD_A = 1.77
SI_SI_DIMER_A = 1.80   # projected; the dimer buckles out of plane
Z_OF = {C: 6, SI: 14}

#: Defect labels stored per atom in ``Sample.label`` (0 = pristine lattice).
LABELS = ("lattice", "si3", "si4", "vacancy_edge", "divacancy_585", "stone_wales", "dimer",
          "cluster", "hole_edge", "contamination", "adatom")
LABEL = {name: i for i, name in enumerate(LABELS)}


@dataclass
class Sample:
    """A set of atoms.

    xy_A : (N, 2) float64 positions (x, y) in angstrom.
    species : (N,) int8 codes (0 C, 1 Si, 2 other heavy atom).
    z : (N,) int16 atomic numbers (scattering strength).
    ids : (N,) int64 identity of each physical atom (unique, stable across frames).
    label : (N,) int8 index into :data:`LABELS`.
    lattice : (N,) bool, True for atoms of the graphene sheet (False: contamination, adatoms).
    """

    xy_A: np.ndarray
    species: np.ndarray
    z: np.ndarray
    ids: np.ndarray
    label: np.ndarray
    lattice: np.ndarray
    defects: list = field(default_factory=list)   # list of dict(kind, ids)
    next_id: int = 0

    def __len__(self) -> int:
        return int(self.xy_A.shape[0])

    def copy(self) -> "Sample":
        return Sample(self.xy_A.copy(), self.species.copy(), self.z.copy(), self.ids.copy(),
                      self.label.copy(), self.lattice.copy(), [dict(d) for d in self.defects], self.next_id)

    def index(self, ids) -> np.ndarray:
        """Indices of the atoms with the given ids (KeyError if one is missing)."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        order = np.argsort(self.ids)
        pos = np.searchsorted(self.ids, ids, sorter=order)
        pos = np.clip(pos, 0, len(order) - 1)
        idx = order[pos]
        if not np.all(self.ids[idx] == ids):
            raise KeyError(f"atom ids not in sample: {ids[self.ids[idx] != ids].tolist()}")
        return idx

    def nearest(self, xy_A, lattice_only: bool = True, species: int | None = C) -> int:
        """Id of the atom nearest to ``xy_A`` (by default a lattice carbon)."""
        ok = np.ones(len(self), bool)
        if lattice_only:
            ok &= self.lattice
        if species is not None:
            ok &= self.species == species
        ok &= self.label == LABEL["lattice"]
        cand = np.flatnonzero(ok)
        d = np.hypot(*(self.xy_A[cand] - np.asarray(xy_A)).T)
        return int(self.ids[cand[np.argmin(d)]])

    def remove(self, ids) -> None:
        """Remove atoms; defect entries forget them (an emptied defect is dropped)."""
        gone = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        keep = ~np.isin(self.ids, gone)
        gone_set = set(gone.tolist())
        for d in self.defects:
            d["ids"] = [i for i in d["ids"] if i not in gone_set]
        for name in ("xy_A", "species", "z", "ids", "label", "lattice"):
            setattr(self, name, getattr(self, name)[keep])

    def append(self, xy_A, species, z, label, lattice) -> np.ndarray:
        xy_A = np.atleast_2d(np.asarray(xy_A, dtype=np.float64))
        n = xy_A.shape[0]
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        self.xy_A = np.vstack([self.xy_A, xy_A])
        self.species = np.concatenate([self.species, np.broadcast_to(np.int8(species), n)]).astype(np.int8)
        self.z = np.concatenate([self.z, np.broadcast_to(np.int16(z), n)]).astype(np.int16)
        self.ids = np.concatenate([self.ids, ids])
        self.label = np.concatenate([self.label, np.broadcast_to(np.int8(label), n)]).astype(np.int8)
        self.lattice = np.concatenate([self.lattice, np.broadcast_to(bool(lattice), n)])
        return ids

    def lattice_neighbours(self, atom_id: int, k: int = 3, max_A: float = 1.9) -> np.ndarray:
        """Ids of up to ``k`` lattice neighbours of an atom within ``max_A``, nearest first."""
        i = self.index(atom_id)[0]
        lat = np.flatnonzero(self.lattice)
        d = np.hypot(*(self.xy_A[lat] - self.xy_A[i]).T)
        d[lat == i] = np.inf
        order = np.argsort(d)[:k]
        order = order[d[order] < max_A]
        return self.ids[lat[order]]


def graphene(fov_A: tuple[float, float], rotation_deg: float = 0.0, rng: np.random.Generator | None = None,
             margin_A: float = 3.0) -> Sample:
    """A pristine graphene sheet covering ``[-margin, fov + margin]`` in x and y.

    fov_A : (width, height) of the field of view in A; rotation_deg : lattice rotation;
    the lattice origin is offset at random when ``rng`` is given.
    """
    w, h = fov_A
    a = A_LATTICE_A
    a1 = np.array([a, 0.0])
    a2 = np.array([a / 2, a * np.sqrt(3) / 2])
    basis = np.array([[0.0, 0.0], [a / 2, a / (2 * np.sqrt(3))]])
    half = 0.5 * np.hypot(w, h) + margin_A + 2 * a
    n = int(np.ceil(2 * half / (a * np.sqrt(3) / 2))) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    cells = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    pts = (cells[:, None, :] + basis[None]).reshape(-1, 2)
    th = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    shift = rng.uniform(0, a, 2) if rng is not None else np.zeros(2)
    pts = (pts + shift) @ rot.T + np.array([w / 2, h / 2])
    keep = (pts[:, 0] > -margin_A) & (pts[:, 0] < w + margin_A) & (pts[:, 1] > -margin_A) & (pts[:, 1] < h + margin_A)
    pts = pts[keep]
    n = len(pts)
    return Sample(pts, np.zeros(n, np.int8), np.full(n, 6, np.int16), np.arange(n, dtype=np.int64),
                  np.zeros(n, np.int8), np.ones(n, bool), [], n)


def _push(sample: Sample, centre_A, ids, target_A: float) -> None:
    """Move atoms radially from ``centre_A`` so that they sit ``target_A`` away from it."""
    idx = sample.index(ids)
    v = sample.xy_A[idx] - np.asarray(centre_A)
    r = np.hypot(*v.T)[:, None]
    sample.xy_A[idx] = np.asarray(centre_A) + v / np.maximum(r, 1e-9) * target_A


def _relax_shell(sample: Sample, centre_A, inner_A: float, outer_A: float, strain_A: float) -> None:
    """Push lattice atoms between ``inner_A`` and ``outer_A`` of a centre outward by a decaying strain."""
    v = sample.xy_A - np.asarray(centre_A)
    r = np.hypot(*v.T)
    sel = sample.lattice & (r > inner_A) & (r < outer_A)
    f = strain_A * np.exp(-(r[sel] - inner_A) / 1.5)
    sample.xy_A[sel] += v[sel] / r[sel, None] * f[:, None]


def _mark(sample: Sample, ids, label: str, kind: str, species=None) -> list[int]:
    idx = sample.index(ids)
    sample.label[idx] = LABEL[label]
    if species is not None:
        sample.species[idx] = species
        sample.z[idx] = Z_OF[species]
    ids = [int(x) for x in np.atleast_1d(ids)]
    sample.defects.append({"kind": kind, "ids": ids})
    return ids


def add_si3(sample: Sample, atom_id: int) -> list[int]:
    """Substitute a lattice C by a 3-fold Si (Si-C ~1.77 A, neighbours relaxed outward)."""
    i = sample.index(atom_id)[0]
    centre = sample.xy_A[i].copy()
    nb = sample.lattice_neighbours(atom_id, 3)
    _relax_shell(sample, centre, 2.0, 5.0, 0.08)
    _push(sample, centre, nb, SI_C_3FOLD_A)
    return _mark(sample, [atom_id], "si3", "si3", SI)


def add_si4(sample: Sample, atom_id: int, partner_id: int | None = None) -> list[int]:
    """A 4-fold Si in a divacancy: remove a C-C pair and put Si at its centre (Si-C ~1.9 A).

    Returns [si_id]; the removed C ids are recorded in the defect entry as ``removed``.
    """
    nb = sample.lattice_neighbours(atom_id, 3)
    partner = int(nb[0]) if partner_id is None else int(partner_id)
    idx = sample.index([atom_id, partner])
    centre = sample.xy_A[idx].mean(axis=0)
    sample.remove([atom_id, partner])
    (sid,) = sample.append(centre, SI, 14, LABEL["si4"], True)
    sample.defects.append({"kind": "si4", "ids": [int(sid)], "removed": [int(atom_id), partner]})
    _relax_shell(sample, centre, 2.3, 5.0, -0.04)
    return [int(sid)]


def add_vacancy(sample: Sample, atom_id: int) -> list[int]:
    """Remove one C (monovacancy); its three neighbours are labelled ``vacancy_edge``."""
    nb = sample.lattice_neighbours(atom_id, 3)
    sample.remove([atom_id])
    _mark(sample, nb, "vacancy_edge", "vacancy")
    sample.defects[-1]["removed"] = [int(atom_id)]
    return [int(x) for x in nb]


def add_divacancy_585(sample: Sample, atom_id: int) -> list[int]:
    """Remove a C-C pair and reconstruct into the 5-8-5 pattern (dangling pairs bond, ~1.75 A)."""
    partner = int(sample.lattice_neighbours(atom_id, 3)[0])
    pa = sample.lattice_neighbours(atom_id, 3)
    pb = sample.lattice_neighbours(partner, 3)
    na = [int(x) for x in pa if x != partner]
    nbb = [int(x) for x in pb if x != atom_id]
    sample.remove([atom_id, partner])
    for pair in (na, nbb):
        idx = sample.index(pair)
        mid = sample.xy_A[idx].mean(axis=0)
        v = sample.xy_A[idx] - mid
        sample.xy_A[idx] = mid + v / np.hypot(*v.T)[:, None] * 0.88
    ids = _mark(sample, na + nbb, "divacancy_585", "divacancy_585")
    sample.defects[-1]["removed"] = [int(atom_id), partner]
    return ids


def add_stone_wales(sample: Sample, atom_id: int) -> list[int]:
    """Rotate a C-C bond by 90 degrees about its centre (55-77 defect)."""
    partner = int(sample.lattice_neighbours(atom_id, 3)[0])
    idx = sample.index([atom_id, partner])
    mid = sample.xy_A[idx].mean(axis=0)
    v = sample.xy_A[idx] - mid
    sample.xy_A[idx] = mid + v[:, ::-1] * np.array([-1.0, 1.0]) * (1.32 / CC_BOND_A)
    _relax_shell(sample, mid, 2.2, 4.0, 0.15)
    return _mark(sample, [atom_id, partner], "stone_wales", "stone_wales")


def add_dimer(sample: Sample, atom_id: int, partner_id: int | None = None) -> list[int]:
    """Two neighbouring lattice sites both Si (a Si dimer; projected Si-Si ~1.8 A, Si-C ~1.77 A).

    partner_id : the neighbouring site that becomes the second Si (default: the nearest neighbour).
    """
    partner = int(sample.lattice_neighbours(atom_id, 3)[0]) if partner_id is None else int(partner_id)
    idx = sample.index([atom_id, partner])
    mid = sample.xy_A[idx].mean(axis=0)
    others = {sid: [x for x in sample.lattice_neighbours(sid, 3) if x not in (atom_id, partner)]
              for sid in (atom_id, partner)}
    _relax_shell(sample, mid, 2.4, 5.5, 0.1)
    _push(sample, mid, [atom_id, partner], SI_SI_DIMER_A / 2)
    for sid in (atom_id, partner):
        j = sample.index(sid)[0]
        _push(sample, sample.xy_A[j], others[sid], SI_C_3FOLD_A)
    return _mark(sample, [atom_id, partner], "dimer", "dimer", SI)


def _clear(sample: Sample, atom_id: int, bonded, min_A: float = 2.4) -> None:
    """Push lattice atoms that are not bonded to ``atom_id`` out to at least ``min_A`` from it."""
    i = sample.index(atom_id)[0]
    v = sample.xy_A - sample.xy_A[i]
    r = np.hypot(*v.T)
    sel = sample.lattice & (r < min_A) & (r > 0) & ~np.isin(sample.ids, list(bonded) + [atom_id])
    sample.xy_A[sel] = sample.xy_A[i] + v[sel] / r[sel, None] * min_A


#: public name of :func:`_clear` (the movie clears the second shell of a Si pair with it)
clear_unbonded = _clear


def add_cluster(sample: Sample, atom_id: int, n_si: int = 3, outer_ids=None) -> list[int]:
    """A small Si cluster: a Si and ``n_si - 1`` of its neighbours become Si (projected Si-Si ~1.8 A).

    outer_ids : which neighbours become Si (default: the nearest ``n_si - 1``).
    A "rotor" candidate: :func:`rotate_group` turns it in place.
    """
    nb = [int(x) for x in sample.lattice_neighbours(atom_id, 3)]
    if outer_ids is not None:
        outer_ids = [int(x) for x in outer_ids]
        if len(outer_ids) != n_si - 1 or not set(outer_ids) <= set(nb):
            raise ValueError(f"outer_ids {outer_ids} must be {n_si - 1} lattice neighbours of {atom_id} ({nb})")
        nb = outer_ids + [x for x in nb if x not in outer_ids]
    outer = nb[: n_si - 1]
    bonded = {int(atom_id): nb}
    for j in outer:
        bonded[j] = [int(x) for x in sample.lattice_neighbours(j, 3)]
    i = sample.index(atom_id)[0]
    centre = sample.xy_A[i].copy()
    # Si-Si projected ~1.8 A (as the dimer); a wider outward relaxation keeps every second-neighbour
    # C-C pair clear of the 1.9 A bond cutoff (the earlier 1.95 A / 0.12 A strain left pairs at 1.94 A).
    _relax_shell(sample, centre, 2.6, 7.0, 0.3)
    _push(sample, centre, outer, SI_SI_DIMER_A)
    _push(sample, centre, nb[n_si - 1:], SI_C_3FOLD_A)
    for j in outer:
        cs = [x for x in bonded[j] if x != atom_id]
        _push(sample, sample.xy_A[sample.index(j)[0]], cs, SI_C_3FOLD_A)
    for sid, bl in bonded.items():
        _clear(sample, sid, bl)
    return _mark(sample, [int(atom_id)] + outer, "cluster", f"cluster{n_si}", SI)


def rotate_group(sample: Sample, ids, angle_deg: float) -> None:
    """Rotate a group of atoms about its centre (a "rotor" step)."""
    idx = sample.index(ids)
    c = sample.xy_A[idx].mean(axis=0)
    th = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    sample.xy_A[idx] = (sample.xy_A[idx] - c) @ rot.T + c


def add_hole(sample: Sample, centre_A, radius_A: float, rng: np.random.Generator) -> list[int]:
    """Remove the lattice inside an irregular disc; atoms left at the rim are ``hole_edge``."""
    v = sample.xy_A - np.asarray(centre_A)
    ang = np.arctan2(v[:, 1], v[:, 0])
    wobble = 1 + 0.2 * np.sin(3 * ang + rng.uniform(0, 6.3)) + 0.1 * np.sin(5 * ang + rng.uniform(0, 6.3))
    inside = sample.lattice & (np.hypot(*v.T) < radius_A * wobble)
    sample.remove(sample.ids[inside])
    # Dangling atoms (fewer than 2 lattice neighbours) fall out: real edges hold 2-coordinated atoms.
    for _ in range(3):
        lat, counts = _lattice_counts(sample)
        near = np.hypot(*(sample.xy_A[lat] - np.asarray(centre_A)).T) < radius_A * 1.6 + 2
        lone = lat[(counts <= 1) & near]
        if len(lone) == 0:
            break
        sample.remove(sample.ids[lone])
    lat, counts = _lattice_counts(sample)
    near = np.hypot(*(sample.xy_A[lat] - np.asarray(centre_A)).T) < radius_A * 1.6 + 2
    keep_ids = sample.ids[lat[(counts < 3) & near]]
    return _mark(sample, keep_ids, "hole_edge", "hole")


def _lattice_counts(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Indices of lattice atoms and their number of lattice neighbours within 1.6 A."""
    lat = np.flatnonzero(sample.lattice)
    tree = cKDTree(sample.xy_A[lat])
    counts = tree.query_ball_point(sample.xy_A[lat], 1.6, return_length=True) - 1
    return lat, counts


def add_contamination(sample: Sample, centre_A, radius_A: float, rng: np.random.Generator,
                      density_per_A2: float = 0.25, heavy_fraction: float = 0.05) -> list[int]:
    """An amorphous contamination patch over the lattice: random atoms (mostly C, ~5 % O/N-like
    Z = 8) in 1-3 overlapping lobes with soft edges, within about ``1.3 x radius_A`` of the centre.

    ``density_per_A2`` is the projected density at the centre (graphene itself is 0.38 /A^2; thick
    hydrocarbon layers reach > 1 /A^2 and look brighter than the lattice).
    """
    centre_A = np.asarray(centre_A, float)
    n_lobes = int(rng.integers(1, 4))
    xy_parts = []
    for j in range(n_lobes):
        rad = radius_A * (1.0 if j == 0 else float(rng.uniform(0.4, 0.9)))
        off = np.zeros(2) if j == 0 else rng.normal(0, 0.4 * radius_A, 2)
        n = rng.poisson(density_per_A2 * np.pi * rad ** 2)
        r = rad * np.sqrt(rng.uniform(0, 1, n)) * (1 + 0.15 * rng.standard_normal(n))
        t = rng.uniform(0, 2 * np.pi, n)
        xy_parts.append(centre_A + off + np.c_[r * np.cos(t), r * np.sin(t)])
    xy = np.vstack(xy_parts)
    heavy = rng.uniform(size=len(xy)) < heavy_fraction
    # Contamination is hydrocarbon-like: light atoms (labelled C) with a few heavier O/N-like ones
    # (Z = 8) that scatter more but are not a "heavy species".
    ids = sample.append(xy, C, 6, LABEL["contamination"], False)
    sample.z[sample.index(ids[heavy])] = 8
    sample.defects.append({"kind": "contamination", "ids": [int(x) for x in ids],
                           "centre_A": [float(centre_A[0]), float(centre_A[1])], "radius_A": float(radius_A)})
    return [int(x) for x in ids]


def add_adatom(sample: Sample, xy_A, z: int = 29) -> list[int]:
    """A heavy atom that is neither C nor Si (default Cu, Z=29), for out-of-distribution tests."""
    ids = sample.append(np.asarray(xy_A, float), OTHER, z, LABEL["adatom"], False)
    sample.defects.append({"kind": "adatom", "ids": [int(ids[0])], "z": int(z)})
    return [int(ids[0])]


def hollow_site(sample: Sample, near_A) -> np.ndarray:
    """Centre of the hexagon nearest to ``near_A`` (mean of the 6 lattice atoms around it)."""
    lat = np.flatnonzero(sample.lattice)
    d = np.hypot(*(sample.xy_A[lat] - np.asarray(near_A)).T)
    six = lat[np.argsort(d)[:6]]
    return sample.xy_A[six].mean(axis=0)


def coordination(sample: Sample, cutoffs_A: dict | None = None) -> np.ndarray:
    """Geometric coordination of lattice atoms (bonds within per-pair cutoffs; others get 0).

    Cutoffs default to the midpoints between the first and second neighbour shells:
    C-C 1.9, Si-C 2.2, Si-Si 2.6 A (see docs/simulator.md).
    """
    cut = {"C-C": 1.9, "Si-C": 2.2, "Si-Si": 2.6}
    if cutoffs_A:
        cut.update(cutoffs_A)
    out = np.zeros(len(sample), np.int16)
    lat = np.flatnonzero(sample.lattice & (sample.species != OTHER))
    if len(lat) < 2:
        return out
    tree = cKDTree(sample.xy_A[lat])
    pairs = tree.query_pairs(max(cut.values()), output_type="ndarray")
    if len(pairs) == 0:
        return out
    si = sample.species[lat] == SI
    d = np.hypot(*(sample.xy_A[lat[pairs[:, 0]]] - sample.xy_A[lat[pairs[:, 1]]]).T)
    nsi = si[pairs[:, 0]].astype(int) + si[pairs[:, 1]]
    lim = np.choose(nsi, [cut["C-C"], cut["Si-C"], cut["Si-Si"]])
    ok = d < lim
    np.add.at(out, lat[pairs[ok, 0]], 1)
    np.add.at(out, lat[pairs[ok, 1]], 1)
    return out


#: Defects placed at one lattice site (an atom id), by name: ``SITE_DEFECTS[kind](sample, atom_id)``.
SITE_DEFECTS = {
    "si3": add_si3,
    "si4": add_si4,
    "dimer": add_dimer,
    "cluster3": lambda s, a: add_cluster(s, a, 3),
    "cluster4": lambda s, a: add_cluster(s, a, 4),
    "vacancy": add_vacancy,
    "585": add_divacancy_585,
    "stone_wales": add_stone_wales,
}
