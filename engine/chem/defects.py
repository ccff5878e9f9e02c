"""Defects from the lattice graph: dopant groups, vacancies, topological defects, edges, contamination.

Two families, both built from connected components (no per-atom Python loop; the loops below run
over the few defects of a frame):

* **Dopant groups** (the paper's weakly supervised step, as in LibraryNet): heavy atoms (Si, other)
  plus every atom bonded to one, connected through bonds that touch a heavy atom. ``formula`` counts
  them: ``Si1C3`` (3-fold substitutional Si), ``Si1C4`` (4-fold Si in a divacancy), ``Si2C4`` /
  ``Si2C6`` (dimers), ``Si3C6``...; heavy atoms that are not Si count as ``X``.
  ``kind``: ``Si-<n>fold`` for one Si with n bonds, ``Si-dimer`` (2 Si), ``Si-cluster`` (3+),
  ``heavy-atom`` (only "other").
* **Lattice defects**: faces of the planar graph that are not hexagons (bounded faces of 3-5 or 7+
  corners) and C atoms that are not 3-fold, away from the frame edge, joined when they share atoms.
  The multiset of face sizes names the defect:

  =====================  =============  =======
  faces                  kind           formula
  =====================  =============  =======
  one pore, 1 missing    vacancy        V1
  5 + 9                  vacancy        V1     (reconstructed monovacancy)
  one pore, 2 missing    divacancy      V2
  5 + 8 + 5              5-8-5          V2
  5 x 3 + 7 x 3          555-777        V2
  5 + 5 + 7 + 7          Stone-Wales    SW
  one pore, n missing    hole           Vn     (n >= 3 missing atoms)
  6+ rings, 3/4 are 5/7  grain-boundary R5x6-7x6 (+Vn per pore)
  anything else          topological    R5-7... (ring sizes x count, +Vn per pore)
  =====================  =============  =======

  When a group matches no pattern but does once the faces with a heavy "other" atom among their
  corners are set aside, it takes that pattern's name (a heavy adatom hides the C under it and bends
  the rings beside it; :func:`_pattern_beside_heavy`).
  A pore is a bounded face of 9+ corners from which at least one atom is missing, by its area and
  corner count (:func:`missing_atoms`, Pick's theorem on the honeycomb); a 9- or 11-ring of a grain
  boundary with no atom missing is a ring, not a pore. A lattice defect whose
  every face touches a dopant group (the two pentagons around a 4-fold Si) belongs to that group and
  is not listed twice. C atoms on the outer boundary of the lattice away from the frame edge form
  ``edge`` defects (2-fold C on the outer face of the lattice). ``contamination``: pieces of the
  graph that do not reach the frame edge (islands, lone atoms; pieces within 4 A are one region)
  and the pore around them, disordered clusters (faces of 3-4 corners), and with the raw frame a
  pore brighter than the lattice and a bright overlayer (:func:`overlayer_regions`).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from engine.chem.graph import HEX_AREA_A2, Faces
from engine.types import C, OTHER, SI, Defect

PATTERNS: dict[tuple[int, ...], tuple[str, str]] = {
    (5, 9): ("vacancy", "V1"),
    (5, 5, 8): ("5-8-5", "V2"),
    (5, 5, 5, 7, 7, 7): ("555-777", "V2"),
    (5, 5, 7, 7): ("Stone-Wales", "SW"),
}

#: kinds that are regions rather than point defects (no motif signature)
REGION_KINDS = ("edge", "hole", "contamination")


def near_left_out(xy_px: np.ndarray, outside: np.ndarray, pixel_size_A: float, margin_A: float) -> np.ndarray:
    """True for atoms within about ``margin_A`` of the part of the field left out (``outside``: frame-shaped
    bool, e.g. a contamination region's mask): the lattice is cut there as at the frame edge. On a grid
    of ~1 A cells (a cell is out when any of its pixels is), dilated by the margin."""
    from scipy import ndimage

    out = np.asarray(outside, bool)
    if len(xy_px) == 0 or not out.any():
        return np.zeros(len(xy_px), bool)
    H, W = out.shape
    c = max(1, int(round(1.0 / pixel_size_A)))
    gh, gw = -(-H // c), -(-W // c)
    pad = np.zeros((gh * c, gw * c), bool)
    pad[:H, :W] = out
    cells = pad.reshape(gh, c, gw, c).any(axis=(1, 3))
    k = int(np.ceil(margin_A / (c * pixel_size_A)))
    if k > 0:
        cells = ndimage.binary_dilation(cells, iterations=k)
    q = np.clip((np.asarray(xy_px) + 0.5) // c, 0, [gw - 1, gh - 1]).astype(np.int64)
    return cells[q[:, 1], q[:, 0]]


def near_frame_edge(xy_px: np.ndarray, frame_shape, pixel_size_A: float, margin_A: float) -> np.ndarray:
    """True for atoms within ``margin_A`` of the frame edge (bounding box of the atoms if unknown)."""
    if len(xy_px) == 0:
        return np.zeros(0, bool)
    m = margin_A / pixel_size_A
    if frame_shape is not None:
        H, W = frame_shape
        lo = np.array([-0.5, -0.5])
        hi = np.array([W - 0.5, H - 0.5])
    else:
        lo = xy_px.min(0)
        hi = xy_px.max(0)
    x, y = xy_px[:, 0], xy_px[:, 1]                       # (per column: .any(1) on (N, 2) costs more)
    return ((x - lo[0]) < m) | ((y - lo[1]) < m) | ((hi[0] - x) < m) | ((hi[1] - y) < m)


def formula_of(species: np.ndarray) -> str:
    """``Si{n}C{m}`` (+ ``X{k}`` for other heavy atoms) from member species codes."""
    n_si = int((species == SI).sum())
    n_x = int((species == OTHER).sum())
    n_c = int((species == C).sum())
    out = ""
    if n_si:
        out += f"Si{n_si}"
    if n_x:
        out += f"X{n_x}"
    return out + f"C{n_c}"


def _components(n_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component labels (n_nodes,) of the graph with edges (a, b).

    Only the nodes touched by an edge take part; the others keep labels of their own (>= n_nodes).
    Small graphs (the usual case: a few defects) use hook-and-compress label propagation in numpy,
    large ones scipy's ``connected_components``.
    """
    labels = np.arange(n_nodes) + n_nodes
    if len(a) == 0:
        return labels
    used, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    k = len(used)
    ia, ib = inv[:len(a)], inv[len(a):]
    if len(a) > 4000:
        g = sparse.coo_matrix((np.ones(len(a), np.int8), (ia, ib)), shape=(k, k)).tocsr()
        labels[used] = connected_components(g, directed=False)[1]
        return labels
    lab = np.arange(k)
    while True:
        la, lb = lab[ia], lab[ib]
        m = np.minimum(la, lb)
        new = lab.copy()
        np.minimum.at(new, la, m)                  # hook each root onto the smaller neighbour label
        np.minimum.at(new, lb, m)
        while True:                                # compress paths
            nxt = new[new]
            if np.array_equal(nxt, new):
                break
            new = nxt
        if np.array_equal(new, lab):
            break
        lab = new
    labels[used] = lab
    return labels


def _groups(labels: np.ndarray, members: np.ndarray) -> list[np.ndarray]:
    """Split ``members`` (indices) by ``labels[members]``; returns a list of index arrays."""
    if members.size == 0:
        return []
    lab = labels[members]
    order = np.argsort(lab, kind="stable")
    members, lab = members[order], lab[order]
    cuts = np.flatnonzero(np.diff(lab)) + 1
    return np.split(members, cuts)


def heavy_adatoms(xy_A: np.ndarray, xy_px: np.ndarray, species: np.ndarray, coord: np.ndarray,
                  cutoff_A: float) -> list[Defect]:
    """Heavy adatoms (species "other" over a hexagon, kept out of the bond graph).

    Each is a ``heavy-atom`` defect ``X1C{n}`` with its n C within ``cutoff_A`` (6 over a hexagon's
    centre); ``coord`` (in place) gets n for the heavy atom. ``species``: only the adatoms are 2.
    """
    from engine.chem.atoms import pairs_within

    out = []
    xs = np.flatnonzero(species == OTHER)
    cs = np.flatnonzero(species == C)
    k, j = pairs_within(xy_A[cs], xy_A[xs], cutoff_A)       # C near each adatom (KD-tree when many)
    keep = np.hypot(*(xy_A[cs[j]] - xy_A[xs[k]]).T) < cutoff_A
    k, nbs = k[keep], cs[j[keep]]
    cuts = np.searchsorted(k, np.arange(len(xs) + 1))
    for q, x in enumerate(xs):                              # one defect per adatom
        nb = nbs[cuts[q]:cuts[q + 1]]
        coord[x] = len(nb)
        out.append(Defect("heavy-atom", f"X1C{len(nb)}", np.r_[x, nb].astype(np.int32),
                          (float(xy_px[x, 0]), float(xy_px[x, 1]))))
    return out


def dopant_groups(species: np.ndarray, bonds: np.ndarray, coord: np.ndarray, xy_px: np.ndarray,
                  heavy: np.ndarray | None = None) -> list[Defect]:
    """Dopant groups (see the module docstring); ``heavy``: which atoms seed groups (default non-C)."""
    n = len(species)
    heavy = (species != C) if heavy is None else heavy
    if not heavy.any():
        return []
    hb = heavy[bonds[:, 0]] | heavy[bonds[:, 1]]
    a, b = bonds[hb, 0], bonds[hb, 1]
    labels = _components(n, a, b)
    in_group = heavy.copy()
    in_group[a] = True
    in_group[b] = True
    groups = _groups(labels, np.flatnonzero(in_group))
    if not groups:
        return []
    # per-group counts, the lone Si's coordination and the heavy atoms' centre, all groups at once
    mem = np.concatenate(groups)
    g = np.repeat(np.arange(len(groups)), [len(m) for m in groups])
    sp = species[mem]
    k = len(groups)
    n_si = np.bincount(g, sp == SI, k).astype(np.int64)
    n_x = np.bincount(g, sp == OTHER, k).astype(np.int64)
    n_c = np.bincount(g, sp == C, k).astype(np.int64)
    si_coord = np.bincount(g, np.where(sp == SI, coord[mem], 0), k).astype(np.int64)   # (one Si: its own)
    hv = sp != C
    n_hv = np.bincount(g[hv], minlength=k)
    cx = np.bincount(g[hv], xy_px[mem[hv], 0], k) / n_hv
    cy = np.bincount(g[hv], xy_px[mem[hv], 1], k) / n_hv
    out = []
    for q, members in enumerate(groups):
        ns = int(n_si[q])
        kind = ("heavy-atom" if ns == 0 else f"Si-{int(si_coord[q])}fold" if ns == 1 else
                "Si-dimer" if ns == 2 else "Si-cluster")
        formula = (f"Si{ns}" if ns else "") + (f"X{int(n_x[q])}" if n_x[q] else "") + f"C{int(n_c[q])}"
        out.append(Defect(kind, formula, members.astype(np.int32), (float(cx[q]), float(cy[q]))))
    return out


def missing_atoms(area_A2: float, corners: int) -> int:
    """Atoms missing from a pore of graphene: Pick's theorem on the honeycomb lattice.

    Each atom owns 2.62 A^2 (half a hexagon); a polygon through ``corners`` atom centres covers
    (corners - 2) / 2 atoms' worth of its boundary atoms, so missing = area / 2.62 - corners / 2 + 1
    (exact for unrelaxed lattice: 1 for a monovacancy, 2 for a divacancy).
    """
    return int(round(area_A2 / (HEX_AREA_A2 / 2) - corners / 2 + 1))


def _pattern_beside_heavy(faces_here: np.ndarray, corner_sets: list, heavy_other: np.ndarray, f: Faces):
    """A known pattern (:data:`PATTERNS`) left when the faces with a heavy "other" atom among their
    corners are set aside, as ``(kind, formula, corner atoms of the rest)``; None when no face is set
    aside or the rest is not a known pattern. A heavy adatom hides the C under it: the network finds
    one bright atom where the adatom and one or two C are, and the ring around it reads as a pentagon
    that joins the group of a neighbouring 5-8-5 (seen on held-out simulated frames); the heavy atom
    is reported by its own dopant group."""
    if len(faces_here) < 2:
        return None
    touch = np.array([bool(heavy_other[c].any()) for c in corner_sets])
    if not touch.any() or touch.all():
        return None
    rest = tuple(sorted(int(s) for s in f.size[faces_here[~touch]]))
    if rest not in PATTERNS:
        return None
    kind, formula = PATTERNS[rest]
    return kind, formula, np.unique(np.concatenate([c for c, t in zip(corner_sets, touch) if not t]))


def lattice_defects(xy_A: np.ndarray, xy_px: np.ndarray, species: np.ndarray, bonds: np.ndarray,
                    coord: np.ndarray, f: Faces, edge_zone: np.ndarray, in_dopant: np.ndarray,
                    pore_brightness=None, scale: float = 1.0) -> list[Defect]:
    """Lattice defects (see the module docstring).

    ``edge_zone``: atoms near the frame edge (not judged); ``in_dopant``: atoms of dopant groups;
    ``pore_brightness``: optional (n_faces,) values, > 0.5 where a pore looks bright on the raw frame,
    or a function returning them (called only if a pore of 3 or more missing atoms is judged);
    ``scale``: the frame's C-C length / 1.42 A (pore areas are divided by its square).
    """
    n = len(species)
    is_c = species == C
    pos = f.area_A2 > 0
    resolved: list = []

    def bright(k: int) -> bool:
        """Pore ``k`` is bright on the raw frame (``pore_brightness`` may be a function giving the
        array: called once, only when a big pore needs it)."""
        pb = pore_brightness
        if callable(pb):
            if not resolved:
                resolved.append(pb())
            pb = resolved[0]
        return pb is not None and pb[k] > 0.5
    corner_face, corner_atom = f.face, f.src
    touches_edge = np.bincount(corner_face, weights=edge_zone[corner_atom], minlength=f.n_faces) > 0
    # islands: pieces of the graph that never reach the frame edge (and lone atoms)
    island = (coord == 0) & ~edge_zone
    island_faces = ~pos & ~touches_edge
    if island_faces.any():
        comp = _components(n, bonds[:, 0], bonds[:, 1])
        island |= np.isin(comp, comp[corner_atom[island_faces[corner_face]]])
    # faces that are not hexagons and C that is not 3-fold, away from the frame edge and islands
    dface = pos & (f.size != 6) & ~touches_edge
    # an atom on a non-hexagonal face that reaches the frame edge may miss a neighbour beyond it
    edge_affected = np.zeros(n, bool)
    edge_affected[corner_atom[(touches_edge & pos & (f.size != 6))[corner_face]]] = True
    anom = is_c & (coord != 3) & ~edge_zone & ~island & ~edge_affected
    outer_atom = np.zeros(n, bool)
    outer_atom[corner_atom[~pos[corner_face]]] = True
    edge_atom = outer_atom & (coord < 3) & ~edge_zone & is_c & ~island & ~edge_affected
    anom_or_edge = anom | edge_atom
    out: list[Defect] = []
    islands: list[np.ndarray] = []
    if island.any():
        # island atoms within 4 A of each other form one contamination region
        i_idx = np.flatnonzero(island)
        pairs = cKDTree(xy_A[i_idx]).query_pairs(4.0, output_type="ndarray")
        ilab = _components(len(i_idx), pairs[:, 0], pairs[:, 1])
        for grp in _groups(ilab, np.arange(len(i_idx))):
            mem = i_idx[grp]
            islands.append(mem)
            c = xy_px[mem].mean(0)
            out.append(Defect("contamination", "", mem.astype(np.int32), (float(c[0]), float(c[1]))))
    island_centres = np.array([xy_A[m].mean(0) for m in islands]).reshape(-1, 2)
    if not (dface.any() or anom_or_edge.any()):
        return out
    fids = np.flatnonzero(dface)
    fnode = np.full(f.n_faces, -1, np.int64)
    fnode[fids] = n + np.arange(len(fids))
    sel = dface[corner_face]
    bsel = anom_or_edge[bonds[:, 0]] & anom_or_edge[bonds[:, 1]]
    a = np.r_[corner_atom[sel], bonds[bsel, 0]]
    b = np.r_[fnode[corner_face[sel]], bonds[bsel, 1]]
    labels = _components(n + len(fids), a, b)
    seeds = np.r_[np.flatnonzero(anom_or_edge), n + np.arange(len(fids))]
    corners_by_face = _groups(corner_face, np.flatnonzero(sel))   # corner indices per defect face
    face_corners = {int(corner_face[c[0]]): corner_atom[c] for c in corners_by_face}
    heavy_other = species == OTHER
    for nodes in _groups(labels, seeds):
        faces_here = fids[nodes[nodes >= n] - n]
        atoms_here = nodes[nodes < n]
        corner_sets = [face_corners[int(k)] for k in faces_here]
        members = np.unique(np.concatenate(corner_sets + [atoms_here])) if corner_sets else np.unique(atoms_here)
        sizes = tuple(sorted(int(s) for s in f.size[faces_here]))
        core = None
        if edge_atom[atoms_here].any():
            continue                                            # edges are grouped below
        missing = {int(k): missing_atoms(f.area_A2[k] / scale**2, f.size[k]) for k in faces_here if f.size[k] >= 9}
        pores = [k for k, v in missing.items() if v >= 1]
        if not pores and len(faces_here) and all(in_dopant[s].any() for s in corner_sets):
            continue                                            # rings of a dopant group (e.g. Si1C4)
        under = members[(coord[members] < 3) & is_c[members]]
        rings_only = [int(f.size[k]) for k in faces_here if int(k) not in pores]
        big = [k for k in pores if missing[k] >= 3]
        # a big pore that is bright on the raw frame, or holds an island, is covered, not empty
        covered = any(bright(k)
                      or (len(island_centres) and (np.hypot(*(island_centres - f.centre_A[k]).T)
                                                   < np.sqrt(f.area_A2[k] / np.pi)).any()) for k in big)
        if any(s <= 4 for s in sizes) or covered:
            kind, formula = "contamination", ""                 # no 3- or 4-rings in graphene: disorder
        elif big:                                               # a hole, with whatever lines its rim
            kind, formula = "hole", f"V{sum(missing[k] for k in pores)}"
        elif sizes in PATTERNS:
            kind, formula = PATTERNS[sizes]
        elif (core := _pattern_beside_heavy(faces_here, corner_sets, heavy_other, f)) is not None:
            kind, formula, _ = core                             # e.g. a 5-8-5 beside a heavy adatom
        elif len(sizes) == 1 and pores:
            n_missing = missing[pores[0]]
            kind = {1: "vacancy", 2: "divacancy"}.get(n_missing, "hole")
            formula = f"V{n_missing}"
        elif not sizes:
            kind, formula = "topological", "C" + "".join(str(int(c)) for c in np.sort(coord[atoms_here]))
        else:
            counts = {r: rings_only.count(r) for r in sorted(set(rings_only))}
            formula = "-".join(f"{r}x{c}" if c > 1 else str(r) for r, c in counts.items())
            formula = "R" + formula + "".join(f"+V{missing[k]}" for k in pores)
            n57 = sum(r in (5, 7) for r in rings_only)
            kind = "grain-boundary" if len(rings_only) >= 6 and n57 >= 0.75 * len(rings_only) else "topological"
        if core is not None:                                    # centred on the named pattern's rings
            centre_set = core[2]
        else:
            centre_set = under if (len(under) and kind in ("vacancy", "divacancy", "hole")) else members
        c = xy_px[centre_set].mean(0)
        out.append(Defect(kind, formula, members.astype(np.int32), (float(c[0]), float(c[1]))))
    if edge_atom.any():                                         # edge atoms within 2 bonds: one edge
        e_idx = np.flatnonzero(edge_atom)
        pairs = cKDTree(xy_A[e_idx]).query_pairs(3.0, output_type="ndarray")
        elab = _components(len(e_idx), pairs[:, 0], pairs[:, 1])
        for grp in _groups(elab, np.arange(len(e_idx))):
            mem = e_idx[grp]
            c = xy_px[mem].mean(0)
            out.append(Defect("edge", f"C{len(mem)}", mem.astype(np.int32), (float(c[0]), float(c[1]))))
    return out


def overlayer_regions(xy_A: np.ndarray, xy_px: np.ndarray, species: np.ndarray, excess: np.ndarray,
                      threshold: float, min_atoms: int, link_A: float = 4.0, heavy_clear_A: float = 3.0) -> list[Defect]:
    """Contamination regions seen on the raw frame: atoms whose surroundings are brighter than the
    frame's typical atom's by ``threshold`` (:func:`engine.chem.atoms.local_excess`), linked within
    ``link_A``, in groups of at least ``min_atoms``. A group with a heavy "other" atom within
    ``heavy_clear_A`` is left out: a bright adatom lifts its surroundings too, and is reported as itself.
    The graph alone misses an overlayer that the network reads as lattice (thin contamination on
    graphene)."""
    idx = np.flatnonzero(np.asarray(excess) > threshold)
    if len(idx) < max(1, min_atoms):
        return []
    pairs = cKDTree(xy_A[idx]).query_pairs(link_A, output_type="ndarray")
    lab = _components(len(idx), pairs[:, 0], pairs[:, 1])
    heavy = xy_A[np.asarray(species) == OTHER]
    heavy_tree = cKDTree(heavy) if len(heavy) else None
    out = []
    for grp in _groups(lab, np.arange(len(idx))):
        mem = idx[grp]
        if len(mem) < min_atoms:
            continue
        if heavy_tree is not None and (heavy_tree.query(xy_A[mem], distance_upper_bound=heavy_clear_A)[0] < np.inf).any():
            continue
        c = xy_px[mem].mean(0)
        out.append(Defect("contamination", "", mem.astype(np.int32), (float(c[0]), float(c[1]))))
    return out
