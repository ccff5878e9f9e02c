"""The lattice graph: bonds from a KD-tree, coordination, bond angles, and rings as planar faces.

Bonds: every pair closer than the cutoff of its species pair (``ChemistryConfig.bond_cutoff_A``,
angstrom). Cutoffs sit between the first-neighbour shell and the graphene second-neighbour
distance (2.46 A), so moderate strain and localisation error do not change the graph (see
docs/chemistry.md for sources and margins). With ``calibrate_scale`` the cutoffs follow the
frame's median C-C length (a pixel size off by up to 15 % is absorbed). An atom with more bonds
than ``max_coordination`` of its species keeps its shortest ones.

Rings: the graph is drawn in the plane, so its rings are its *faces*. Half-edges are sorted by
angle around each atom; following "turn to the next neighbour clockwise" from every half-edge
traces each face once (a permutation whose cycles are the faces). Bounded faces come out with
positive signed area (x = column, y = row) and the outer boundary of each connected piece of
lattice with negative area. No per-atom Python loop: sorting, pointer jumping along the faces and
a few ``bincount``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from engine.chem.quantile import median
from engine.types import OTHER, SPECIES

CC_A = 1.42
HEX_AREA_A2 = 1.5 * np.sqrt(3.0) * CC_A**2      # 5.24 A^2


def adatom_mask(xy_A: np.ndarray, species: np.ndarray, r_A: float = 1.75, min_c: int = 5) -> np.ndarray:
    """(N,) bool: "other" atoms sitting on the sheet: >= ``min_c`` C within ``r_A`` (over a hexagon
    centre there are 6 at 1.42 A) or any C closer than 1.6 A (a substitutional heavy atom has its 3-4
    C at >= 1.75 A)."""
    out = np.zeros(len(species), bool)
    xs = np.flatnonzero(species == OTHER)
    if len(xs) == 0:
        return out
    from engine.chem.atoms import pairs_within

    cs = xy_A[species == 0]
    x, j = pairs_within(cs, xy_A[xs], max(r_A, 1.6))             # C within reach of each "other" atom
    d2 = (cs[j, 0] - xy_A[xs[x], 0]) ** 2 + (cs[j, 1] - xy_A[xs[x], 1]) ** 2
    n_near = np.bincount(x[d2 < r_A * r_A], minlength=len(xs))
    very_close = np.bincount(x[d2 < 1.6**2], minlength=len(xs)) > 0
    out[xs] = (n_near >= min_c) | very_close
    return out


def cutoff_table(cutoffs: dict) -> np.ndarray:
    """3x3 table of bond cutoffs (A) indexed by species codes; "other" falls back to Si's (a fresh
    array; built once per set of cutoffs)."""
    try:
        return _cutoff_table(tuple(sorted(cutoffs.items()))).copy()
    except TypeError:                                   # unhashable values: build it here
        return _build_cutoff_table(cutoffs)


@functools.lru_cache(maxsize=8)
def _cutoff_table(items: tuple) -> np.ndarray:
    return _build_cutoff_table(dict(items))


def _build_cutoff_table(cutoffs: dict) -> np.ndarray:
    def get(a: str, b: str) -> float:
        for key in (f"{a}-{b}", f"{b}-{a}"):
            if key in cutoffs:
                return float(cutoffs[key])
        a2, b2 = ("Si" if a == "other" else a), ("Si" if b == "other" else b)
        if (a2, b2) != (a, b):
            return get(a2, b2)
        raise KeyError(f"bond_cutoff_A has no entry for {a}-{b} (keys: {sorted(cutoffs)})")

    return np.array([[get(a, b) for b in SPECIES] for a in SPECIES])


def max_coordination_table(max_coord: dict) -> np.ndarray:
    return np.array([int(max_coord.get(s, 4)) for s in SPECIES])


def find_bonds(xy_A: np.ndarray, species: np.ndarray, cfg, exclude: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """Bonds (M, 2) int32 (i < j), their lengths (M,) in A, and the cutoff scale used.

    ``exclude``: (N,) bool, atoms kept out of the graph (see :func:`adatom_mask`).
    """
    n = len(xy_A)
    table = cutoff_table(cfg.bond_cutoff_A)
    if n < 2:
        return np.zeros((0, 2), np.int32), np.zeros(0), 1.0
    scale_max = 1.15 if cfg.calibrate_scale else 1.0
    if exclude is not None and exclude.any():
        # atoms on top of the sheet (heavy adatoms) take no part in the bond graph
        lat = np.flatnonzero(~exclude)
        b, d, sc = find_bonds(xy_A[lat], species[lat], cfg)
        return lat[b].astype(np.int32).reshape(-1, 2), d, sc
    tree = cKDTree(xy_A, balanced_tree=False, compact_nodes=False)
    heavy = species != 0
    # C-C pairs from one query; pairs touching a heavy atom from a second, per heavy atom (few)
    pairs = tree.query_pairs(float(table[0, 0]) * scale_max, output_type="ndarray")
    if heavy.any():
        if len(pairs):
            pairs = pairs.compress(~(heavy[pairs[:, 0]] | heavy[pairs[:, 1]]), axis=0)
        hidx = np.flatnonzero(heavy)
        r_heavy = max(float(table[1:].max()), float(cfg.si_c_shell_A[1]) + 0.3 if cfg.si_c_shell_A else 0.0)
        r = r_heavy * scale_max
        if len(hidx) * n <= 200_000:                   # a few heavy atoms: all distances (no tree walk)
            dx = xy_A[None, :, 0] - xy_A[hidx, 0][:, None]
            dy = xy_A[None, :, 1] - xy_A[hidx, 1][:, None]
            close = dx * dx + dy * dy <= r * r * (1 + 1e-12)
            hh, jj = np.divmod(np.flatnonzero(close), close.shape[1])   # = np.nonzero(close), ~10x faster
            ii = hidx[hh]
        else:
            lists = tree.query_ball_point(xy_A[hidx], r)
            cnt = np.fromiter((len(x) for x in lists), np.int64, len(lists))
            jj = np.fromiter((k for x in lists for k in x), np.int64, int(cnt.sum()))
            ii = np.repeat(hidx, cnt)
        a, b = np.minimum(ii, jj), np.maximum(ii, jj)
        key = np.unique(a[a != b] * n + b[a != b])
        hp = np.stack([key // n, key % n], 1)
        pairs = np.concatenate([pairs.reshape(-1, 2), hp]) if len(hp) else pairs
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int32), np.zeros(0), 1.0
    i, j = pairs[:, 0], pairs[:, 1]
    x, y = xy_A[:, 0].copy(), xy_A[:, 1].copy()       # (columns: 1D gathers cost a tenth of row gathers)
    d = np.hypot(x.take(i) - x.take(j), y.take(i) - y.take(j))
    si, sj = species[i], species[j]
    scale = 1.0
    if cfg.calibrate_scale:
        cc = d[(si == 0) & (sj == 0)]
        if cc.size >= 20:
            scale = min(max(median(cc) / CC_A, 1 / scale_max), scale_max)     # (np.clip on a scalar: ~10 us)
    keep = d <= table[si, sj] * scale
    if cfg.si_c_shell_A and heavy.any():
        hc = (si != 0) != (sj != 0)                       # one heavy atom, one C
        hc &= (si == 0) | (sj == 0)
        if hc.any():
            keep[hc] = _heavy_shell(np.where(si[hc] != 0, i[hc], j[hc]), d[hc],
                                    float(cfg.si_c_shell_A[0]) * scale, float(cfg.si_c_shell_A[1]) * scale)
    i, j, d = i[keep], j[keep], d[keep]
    # over-coordinated atoms keep their shortest bonds
    maxc = max_coordination_table(cfg.max_coordination)
    counts = np.bincount(np.concatenate([i, j]), minlength=n)
    over = counts > maxc[species]
    if over.any():
        # rank only the bonds of over-coordinated atoms (few) by length around each of them
        m = len(d)
        ends = np.concatenate([i, j])
        sel = np.flatnonzero(over[ends])
        e, dd = ends[sel], np.concatenate([d, d])[sel]
        order = np.lexsort((dd, e))
        e_sorted = e[order]
        rank = np.empty(len(sel), np.int64)
        rank[order] = np.arange(len(sel)) - np.searchsorted(e_sorted, e_sorted)
        drop = np.zeros(2 * m, bool)
        drop[sel] = rank >= maxc[species[e]]
        keep = ~(drop[:m] | drop[m:])
        i, j, d = i[keep], j[keep], d[keep]
    if cfg.dangling_bond_A > 0:
        i, j, d = _close_dangling_pairs(xy_A, species, i, j, d, cfg.dangling_bond_A * scale, maxc)
    bonds = np.stack([i, j], 1).astype(np.int32)
    return bonds, d, scale


def _heavy_shell(h: np.ndarray, d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Which heavy-C pairs are bonds: below ``lo`` yes, above ``hi`` no, in between at the widest gap.

    For each heavy atom the C distances are sorted; the first shell ends where the gap to the next
    distance is largest among the cuts that leave every pair below ``lo`` bonded and every pair
    above ``hi`` not (a natural break between shells, robust to a 0.1-0.2 A localisation error that
    a single cutoff is not). ``h``: heavy-atom index of each pair; ``d``: its length.
    """
    order = np.lexsort((d, h))
    hs, ds = h[order], d[order]
    first = np.concatenate([[True], hs[1:] != hs[:-1]])
    start = np.maximum.accumulate(np.where(first, np.arange(len(hs)), 0))
    rank = np.arange(len(hs)) - start
    last = np.concatenate([hs[1:] != hs[:-1], [True]])
    nxt = np.where(last, np.inf, np.concatenate([ds[1:], [np.inf]]))
    gap = np.where(np.isfinite(nxt), nxt - ds, np.inf)    # the outermost pair: an open gap
    g = np.searchsorted(np.unique(hs), hs)
    n_sure = np.bincount(g, weights=(ds < lo))
    n_amb = np.bincount(g, weights=(ds <= hi))
    k = rank + 1                                          # bonds if the cut is after this pair
    cand = (k >= np.maximum(n_sure[g], 1)) & (k <= n_amb[g])
    best = np.full(len(n_sure), -1.0)
    np.maximum.at(best, g[cand], gap[cand])
    # the chosen cut: the smallest k whose gap is the group's best (no candidate: keep the sure ones)
    chosen = np.where(cand & (gap == best[g]), k, np.iinfo(np.int64).max)
    kstar = np.full(len(n_sure), np.iinfo(np.int64).max)
    np.minimum.at(kstar, g, chosen)
    kstar = np.where(kstar == np.iinfo(np.int64).max, n_sure.astype(np.int64), kstar)
    out = np.empty(len(h), bool)
    out[order] = rank < kstar[g]
    return out


def _close_dangling_pairs(xy_A, species, i, j, d, cutoff, maxc):
    """Bond under-coordinated C pairs closer than ``cutoff`` (a reconstructed bond, e.g. 5-8-5).

    Two C that each miss a neighbour and sit within ``cutoff`` (2.2 A: between a stretched
    reconstruction bond, ~1.6-2.0 A once localised, and the 2.46 A of an unreconstructed pair)
    are bonded; each atom takes at most one such bond, shortest first.
    """
    n = len(species)
    coord = np.bincount(np.concatenate([i, j]), minlength=n)
    under = np.flatnonzero((species == 0) & (coord < maxc[0]))
    if len(under) < 2:
        return i, j, d
    pairs = cKDTree(xy_A[under]).query_pairs(cutoff, output_type="ndarray")
    if len(pairs) == 0:
        return i, j, d
    a, b = under[pairs[:, 0]], under[pairs[:, 1]]
    dd = np.hypot(*(xy_A.take(a, axis=0) - xy_A.take(b, axis=0)).T)
    is_under = np.zeros(n, bool)
    is_under[under] = True
    both = is_under[i] & is_under[j]                   # existing bonds between dangling atoms
    existing = np.minimum(i[both], j[both]) * n + np.maximum(i[both], j[both])
    key = np.minimum(a, b) * n + np.maximum(a, b)
    new = np.ones(len(key), bool)
    if len(existing):                                  # (np.isin costs ~0.1 ms on these few pairs)
        existing = np.sort(existing)
        new = existing[np.minimum(np.searchsorted(existing, key), len(existing) - 1)] != key
    a, b, dd = a[new], b[new], dd[new]
    add = _greedy_matching(n, a, b, np.argsort(dd))
    if not len(add):
        return i, j, d
    lo, hi = np.minimum(a[add], b[add]), np.maximum(a[add], b[add])
    return np.concatenate([i, lo]), np.concatenate([j, hi]), np.concatenate([d, dd[add]])


def _greedy_matching(n: int, a: np.ndarray, b: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The pairs (a[k], b[k]) that a greedy matching takes when it visits them in ``order`` (a pair is
    taken when neither atom is taken yet), in that order; vectorised: each round takes every pair
    that comes first among the open pairs at both its atoms (the "locally dominant" pairs give the
    greedy matching for a strict order)."""
    m = len(a)
    rank = np.empty(m, np.int64)
    rank[order] = np.arange(m)
    taken = np.zeros(n, bool)
    chosen = np.zeros(m, bool)
    open_ = np.ones(m, bool)
    while open_.any():
        k = np.flatnonzero(open_)
        first = np.full(n, m, np.int64)
        np.minimum.at(first, a[k], rank[k])
        np.minimum.at(first, b[k], rank[k])
        win = k[(first[a[k]] == rank[k]) & (first[b[k]] == rank[k])]
        chosen[win] = True
        taken[a[win]] = taken[b[win]] = True
        open_ &= ~(taken[a] | taken[b])
    return order[chosen[order]]


def coordination(n: int, bonds: np.ndarray) -> np.ndarray:
    """(N,) int16 number of bonds per atom."""
    return np.bincount(bonds.ravel(), minlength=n).astype(np.int16)


def adjacency(n: int, bonds: np.ndarray) -> sparse.csr_matrix:
    """Symmetric (N, N) boolean CSR adjacency matrix."""
    i, j = bonds[:, 0], bonds[:, 1]
    data = np.ones(2 * len(i), bool)
    return sparse.csr_matrix((data, (np.r_[i, j], np.r_[j, i])), shape=(n, n))


@dataclass
class Faces:
    """Faces of the planar bond graph.

    Per half-edge h (2M of them; h < M is bond h as i->j, h >= M is j->i): ``src``, ``dst``,
    ``face`` (face label). Per face f: ``size`` (number of half-edges = corners), ``area_A2``
    (signed; > 0 bounded), ``centre_A`` (mean of corners). ``indptr``, ``indices``: the adjacency
    in CSR form (neighbours of atom i, by angle: ``indices[indptr[i]:indptr[i + 1]]``).
    """

    src: np.ndarray
    dst: np.ndarray
    face: np.ndarray
    size: np.ndarray
    area_A2: np.ndarray
    centre_A: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray

    @property
    def n_faces(self) -> int:
        return len(self.size)


def _sort_by_atom_then_angle(xy_A: np.ndarray, src: np.ndarray, dst: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-edges sorted by source atom, then by direction angle in [-pi, pi): ``(order, start,
    deg)``, the permutation and, per sorted position, where its atom's run starts and its length.

    A counting sort by atom (numpy's radix sort on 16-bit keys), then each half-edge's rank among
    its atom's few (<= max degree) by comparing angles: the order ``argsort(src + angle / 2 pi)``
    gives (angles of one atom's bonds never tie), at a third of the cost on ~10^4 half-edges."""
    n = int(src.max()) + 1 if len(src) else 0
    vec = xy_A.take(dst, axis=0) - xy_A.take(src, axis=0)        # (take: ~10x cheaper than xy_A[dst])
    ang = np.arctan2(vec[:, 1], vec[:, 0])
    order = np.argsort(src.astype(np.uint16) if n <= 1 << 16 else src, kind="stable")
    a = ang[order]
    counts = np.bincount(src, minlength=n)
    first = np.cumsum(counts) - counts
    g = src[order]
    start, deg = first[g], counts[g]
    rel = np.arange(len(src)) - start
    rank = np.zeros(len(src), np.intp)
    for o in range(1, int(counts.max()) if n else 0):
        t = rel + o                                   # (rel + o) % deg without the division where deg > o
        j = start + np.where(t >= deg, t - deg, t)    # (elsewhere j is masked out: only kept in bounds)
        rank += (deg > o) & (a.take(j, mode="clip") < a)
    out = np.empty_like(order)
    out[start + rank] = order
    return out, start, deg


def _cycle_labels(nxt: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of cycles, label of each element) of the permutation ``nxt``; cycles are numbered in
    the order of their smallest element (as ``connected_components`` numbers them). Pointer
    jumping: after k rounds each element knows the smallest element among the 2**k that follow
    it, so ~log2(longest cycle) rounds over the array. A round that changes nothing has every
    element's minimum equal to that of the element 2**k ahead, hence (around the cycle) to the
    cycle's minimum: done."""
    n = len(nxt)
    low = np.arange(n)
    jump = nxt.copy()
    while True:
        new = np.minimum(low, low.take(jump))
        if np.array_equal(new, low):
            break
        low = new
        jump = jump.take(jump)
    root = low == np.arange(n)
    return int(root.sum()), (np.cumsum(root) - 1)[low]


def faces(xy_A: np.ndarray, bonds: np.ndarray) -> Faces:
    """Trace every face of the planar graph (see the module docstring)."""
    m = len(bonds)
    if m == 0:
        z = np.zeros(0, np.int64)
        return Faces(z, z, z, z, np.zeros(0), np.zeros((0, 2)), np.zeros(len(xy_A) + 1, np.int64), z)
    src = np.concatenate([bonds[:, 0], bonds[:, 1]]).astype(np.int64)
    dst = np.concatenate([bonds[:, 1], bonds[:, 0]]).astype(np.int64)
    order, start, deg = _sort_by_atom_then_angle(xy_A, src, dst)
    pos = np.empty(2 * m, np.int64)
    pos[order] = np.arange(2 * m)
    twin = np.concatenate([np.arange(m, 2 * m), np.arange(m)])
    # arriving by u->v: at v, take the neighbour just before u in increasing-angle order
    k = pos[twin]                                  # position of v->u in the sorted array
    sk = start.take(k)
    kk = np.where(k > sk, k - 1, sk + deg.take(k) - 1)      # start + (k - start - 1) % deg, no division
    nxt = order[kk]
    n_faces, face = _cycle_labels(nxt)
    size = np.bincount(face, minlength=n_faces)
    x, y = xy_A[:, 0].copy(), xy_A[:, 1].copy()
    xs, ys = x.take(src), y.take(src)
    cross = xs * y.take(dst) - x.take(dst) * ys
    area = 0.5 * np.bincount(face, weights=cross, minlength=n_faces)
    cx = np.bincount(face, weights=xs, minlength=n_faces) / size
    cy = np.bincount(face, weights=ys, minlength=n_faces) / size
    indptr = np.zeros(len(xy_A) + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=len(xy_A)), out=indptr[1:])
    return Faces(src, dst, face, size, area, np.stack([cx, cy], 1), indptr, dst[order])


class RingList(Sequence):
    """The rings (5-8 membered bounded faces) of a frame, stored flat; behaves as a list of arrays.

    ``atoms`` (K,) int32: ring members concatenated, each ring in angular order around its centre;
    ``offsets`` (R + 1,); ``sizes`` (R,); ``centre_A`` (R, 2); ``face`` (R,) face label.
    ``rings[r]`` is the int array of ring r's atom indices.
    """

    def __init__(self, atoms: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, centre_A: np.ndarray,
                 face: np.ndarray):
        self.atoms, self.offsets, self.sizes, self.centre_A, self.face = atoms, offsets, sizes, centre_A, face

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, r):
        if isinstance(r, slice):
            return [self[k] for k in range(*r.indices(len(self)))]
        r = int(r)
        if r < 0:
            r += len(self)
        if not 0 <= r < len(self):
            raise IndexError(r)
        return self.atoms[self.offsets[r]:self.offsets[r + 1]]

    def counts(self) -> dict[int, int]:
        """Number of rings per size, e.g. ``{5: 2, 6: 480, 7: 2}``."""
        u, c = np.unique(self.sizes, return_counts=True)
        return {int(a): int(b) for a, b in zip(u, c)}

    def __repr__(self) -> str:
        return f"RingList({self.counts()})"


def ring_list(xy_A: np.ndarray, f: Faces, min_size: int = 5, max_size: int = 8) -> RingList:
    """Bounded faces of ``min_size``..``max_size`` corners with no repeated atom, as a :class:`RingList`."""
    if f.n_faces == 0:
        z = np.zeros(0, np.int64)
        return RingList(z.astype(np.int32), np.zeros(1, np.int64), z, np.zeros((0, 2)), z)
    is_ring = (f.area_A2 > 0) & (f.size >= min_size) & (f.size <= max_size)
    # a face that runs along both sides of a bond (a dangling chain inside it) is not a ring
    m = len(f.face) // 2
    bridge = f.face[:m] == f.face[m:]
    is_ring[f.face[:m][bridge]] = False
    sel = is_ring[f.face]
    fh, sh = f.face[sel], f.src[sel]
    d = xy_A.take(sh, axis=0) - f.centre_A.take(fh, axis=0)
    ang = np.arctan2(d[:, 1], d[:, 0])
    order = np.argsort(fh + (ang + np.pi) * (0.999 / (2 * np.pi)))
    fh, sh = fh[order], sh[order]
    labels = np.flatnonzero(is_ring)
    sizes = f.size[labels]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return RingList(sh.astype(np.int32), offsets, sizes, f.centre_A.take(labels, axis=0), labels)


def bond_angles(xy_A: np.ndarray, bonds: np.ndarray, atoms: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Bond angles: (K, 3) int32 triplets (j, i, k) with the angle at ``i``, and (K,) degrees.

    ``atoms``: restrict to angles centred on these atom indices (all atoms when None).
    Adjacent bonds only (consecutive in angle around ``i``), so a 3-fold atom has 3 angles summing
    to 360 degrees and a 4-fold atom 4.
    """
    m = len(bonds)
    if m == 0:
        return np.zeros((0, 3), np.int32), np.zeros(0)
    src = np.r_[bonds[:, 0], bonds[:, 1]]
    dst = np.r_[bonds[:, 1], bonds[:, 0]]
    if atoms is not None:
        mask = np.zeros(len(xy_A), bool)
        mask[np.asarray(atoms, np.int64)] = True
        keep = mask[src]
        src, dst = src[keep], dst[keep]
    vec = xy_A[dst] - xy_A[src]
    ang = np.arctan2(vec[:, 1], vec[:, 0])
    order = np.lexsort((ang, src))
    src, dst, ang = src[order], dst[order], ang[order]
    start = np.searchsorted(src, src, side="left")
    end = np.searchsorted(src, src, side="right")
    deg = end - start
    nxt = start + (np.arange(len(src)) - start + 1) % np.maximum(deg, 1)
    ok = deg >= 2
    ok &= ~((deg == 2) & (np.arange(len(src)) - start == 1))     # 2 bonds: one angle, not two
    d = (ang[nxt] - ang) % (2 * np.pi)
    d = np.where(deg == 2, np.minimum(d, 2 * np.pi - d), d)
    trip = np.stack([dst[ok], src[ok], dst[nxt][ok]], 1).astype(np.int32)
    return trip, np.degrees(d[ok])
