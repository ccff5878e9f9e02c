"""``Atoms`` -> ``Chemistry``: bonds, coordination, rings, defects with signatures and motif names.

See :mod:`engine.chem.graph` (bonds, faces/rings), :mod:`engine.chem.defects` (dopant groups and
lattice defects) and :mod:`engine.chem.motifs` (signatures, library). Units: positions in the
frame's pixels (``Atoms.xy_px``) and angstrom (``Atoms.xy_A``); bond lengths in angstrom.
"""

from __future__ import annotations

import numpy as np

from engine.chem import defects as _defects
from engine.chem import graph as _graph
from engine.chem.quantile import median
from engine.chem.motifs import atom_ring_hash, signatures
from engine.types import Atoms, Chemistry, Probabilities


def _pore_brightness(image: np.ndarray, atoms: Atoms, f: _graph.Faces, chem_rings) -> np.ndarray | None:
    """(n_faces,) in [0, 1]-ish: pore interior intensity between hexagon-centre (0) and C-atom (1) level.

    Only pores (bounded faces of 9 or more corners) get a value; a frame without one costs nothing.
    The levels are those of the frame smoothed by a Gaussian of sigma 0.3 A, taken at the points
    only (:func:`engine.chem.atoms.gaussian_at`)."""
    if image is None or f.n_faces == 0 or len(atoms) < 10:
        return None
    pores = np.flatnonzero((f.area_A2 > 0) & (f.size >= 9))
    if not len(pores):
        return None                     # only pores are looked up (engine.chem.defects.lattice_defects)
    px = atoms.pixel_size_A
    sigma = max(0.3 / px, 0.5)
    c_atoms = atoms.species == 0
    hexes = chem_rings.sizes == 6
    if c_atoms.sum() < 5 or hexes.sum() < 3:
        return None
    from engine.chem.atoms import gaussian_at

    atom_level = median(gaussian_at(image, sigma, atoms.xy_px[c_atoms]))
    hex_level = median(gaussian_at(image, sigma, chem_rings.centre_A[hexes] / px))
    span = atom_level - hex_level
    if span <= 0:
        return None
    out = np.zeros(f.n_faces)
    out[pores] = (gaussian_at(image, sigma, f.centre_A[pores] / px) - hex_level) / span
    return out


def build_chemistry(atoms: Atoms, cfg, motifs=None, image: np.ndarray | None = None,
                    maps: tuple | None = None, outside: np.ndarray | None = None) -> Chemistry:
    """The lattice graph of one frame and its defects.

    ``cfg``: :class:`stemwatch.config.ChemistryConfig`. ``motifs``: optional
    :class:`engine.chem.motifs.MotifLibrary`; when given, every defect's ``motif`` is named and the
    library counts it. ``image``: the raw frame (frame pixels), optional: tells bright pores
    (contamination) from holes, and bright overlayers. ``maps``: the image's
    :func:`engine.chem.atoms.contrast_maps`, if already computed. ``outside``: frame-shaped bool, the
    part of the field left out of the analysis (a material mask's complement): atoms near it are not
    judged, as near the frame edge (the lattice is cut there).
    """
    n = len(atoms)
    xy_A = atoms.xy_A
    sp = np.asarray(atoms.species)
    adatom = _graph.adatom_mask(xy_A, sp)
    bonds, blen, scale = _graph.find_bonds(xy_A, sp, cfg, exclude=adatom)
    coord = _graph.coordination(n, bonds)
    f = _graph.faces(xy_A, bonds)
    rings = _graph.ring_list(xy_A, f)
    edge_zone = _defects.near_frame_edge(atoms.xy_px, atoms.frame_shape, atoms.pixel_size_A, cfg.edge_margin_A)
    if outside is not None:
        edge_zone |= _defects.near_left_out(atoms.xy_px, outside, atoms.pixel_size_A, cfg.edge_margin_A)
    dop = _defects.dopant_groups(sp, bonds, coord, atoms.xy_px, heavy=(sp != 0) & ~adatom)
    if adatom.any():
        other_c = float(_graph.cutoff_table(cfg.bond_cutoff_A)[2, 0]) * scale
        dop += _defects.heavy_adatoms(xy_A, atoms.xy_px, np.where(adatom, sp, np.minimum(sp, 1)), coord, other_c)
    in_dop = np.zeros(n, bool)
    for d in dop:
        in_dop[d.members] = True
    # the pores' brightness on the raw frame, measured only if a big pore is judged
    bright = (lambda: _pore_brightness(image, atoms, f, rings)) if image is not None else None
    lat = _defects.lattice_defects(xy_A, atoms.xy_px, sp, bonds, coord, f, edge_zone, in_dop, bright, scale)
    defects = lat + dop
    if image is not None and cfg.overlayer_excess > 0:
        from engine.chem.atoms import local_excess

        exc = local_excess(atoms, image, maps=maps)
        if exc is not None:
            known = np.zeros(n, bool)
            for d in defects:
                if d.kind == "contamination":
                    known[d.members] = True
            for d in _defects.overlayer_regions(xy_A, atoms.xy_px, sp, exc, cfg.overlayer_excess,
                                                cfg.overlayer_min_atoms):
                if known[d.members].mean() < 0.5:        # not already found by the graph
                    defects.append(d)
    atom_defect = np.full(n, -1, np.int32)
    for k, d in enumerate(defects):
        atom_defect[d.members] = k
    _sign(defects, n, bonds, sp, coord, f, edge_zone, cfg.motif_radius_bonds)
    chem = Chemistry(atoms, bonds, blen, coord, defects, atom_defect, rings)
    if motifs is not None:
        motifs.observe(defects, atoms.pixel_size_A)
    return chem


def _sign(defects, n, bonds, sp, coord, f, edge_zone, radius) -> None:
    """Set ``signature`` on every point defect whose neighbourhood is clear of the frame edge."""
    todo = [d for d in defects if d.kind not in _defects.REGION_KINDS]
    if not todo:
        return
    face_code = np.where(f.area_A2 > 0, np.minimum(f.size, 10), 0).astype(np.int64)
    sigs, hoods = signatures(f.indptr, f.indices, sp, coord, lambda idx: atom_ring_hash(n, f.face, f.src, face_code, idx),
                             [d.members for d in todo], radius)
    for d, s, h in zip(todo, sigs, hoods):
        d.signature = "" if edge_zone[h].any() else s


def analyze(probs: Probabilities, cfg, image: np.ndarray | None = None, motifs=None) -> Chemistry:
    """:func:`engine.chem.find_atoms` then :func:`build_chemistry` (``image``: raw frame, optional)."""
    from engine.chem.atoms import contrast_maps, find_atoms

    maps = contrast_maps(image, float(probs.frame_pixel_size_A)) if image is not None else None
    atoms = find_atoms(probs, cfg, image, maps)
    return build_chemistry(atoms, cfg, motifs, image, maps)


def chemistry_from_positions(xy_A: np.ndarray, species: np.ndarray, cfg, motifs=None,
                             frame_shape=None) -> Chemistry:
    """Chemistry of exact positions in angstrom (pixel size 1 A; confidence 1): for references and tests."""
    xy = np.asarray(xy_A, np.float64)
    n = len(xy)
    cp = np.zeros((n, 3), np.float32)
    cp[np.arange(n), 1 + (np.asarray(species) != 0)] = 1
    atoms = Atoms(xy, np.asarray(species, np.int8), np.ones(n, np.float32), cp, np.zeros(n, bool), 1.0,
                  frame_shape)
    return build_chemistry(atoms, cfg, motifs)
