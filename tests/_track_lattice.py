"""Plain-data graphene movies with exact identities for the tracker tests (no images, no network).

A honeycomb lattice (C-C 1.42 A) with Si dopants; per frame: global drift, thermal jitter, missed
and spurious detections, and scripted changes (Si hop = site exchange with a C neighbour, C ejection
next to a Si = 3 -> 4 fold with the Si moving to the divacancy centre, the reverse, a plain C
ejection = vacancy, a one-frame Si flicker read as C). ``chemistry_of`` builds a minimal
``Chemistry`` (KD-tree bonds with per-pair cutoffs, coordination, Si-centred defect groups).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from lab.track.synth import render_frame  # noqa: F401  (re-exported for the tests)
from engine.types import C, SI, Atoms, Chemistry, Defect

BOND_A = 1.42
CUTOFF = {(C, C): 1.75, (C, SI): 2.10, (SI, SI): 2.50}


def honeycomb(size_A: float, rotation_deg: float = 7.0, margin_A: float = 12.0) -> np.ndarray:
    """(N, 2) world positions (A) covering [-margin, size + margin]^2."""
    a = BOND_A * np.sqrt(3)
    a1 = np.array([a, 0.0])
    a2 = np.array([a / 2, a * np.sqrt(3) / 2])
    n = int((size_A + 2 * margin_A) / a * 1.6) + 4
    i, j = np.meshgrid(np.arange(-n, n), np.arange(-n, n))
    base = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    pts = np.vstack([base, base + np.array([a / 2, a / (2 * np.sqrt(3))])])
    th = np.deg2rad(rotation_deg)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    pts = pts @ R.T + size_A / 2
    keep = np.all((pts > -margin_A) & (pts < size_A + margin_A), axis=1)
    return pts[keep]


def chemistry_of(xy_px: np.ndarray, species: np.ndarray, ps: float, conf: np.ndarray | None = None) -> Chemistry:
    """A minimal Chemistry: bonds by per-pair cutoffs, coordination, Si-centred groups with formula."""
    n = len(xy_px)
    species = np.asarray(species, np.int8)
    xy_A = xy_px * ps
    tree = cKDTree(xy_A)
    pairs = tree.query_pairs(max(CUTOFF.values()), output_type="ndarray")
    if len(pairs):
        d = np.linalg.norm(xy_A[pairs[:, 0]] - xy_A[pairs[:, 1]], axis=1)
        heavy = (species[pairs[:, 0]] != C).astype(int) + (species[pairs[:, 1]] != C).astype(int)
        cut = np.array([CUTOFF[(C, C)], CUTOFF[(C, SI)], CUTOFF[(SI, SI)]])[heavy]
        pairs, d = pairs[d <= cut], d[d <= cut]
    else:
        d = np.zeros(0)
    coord = np.bincount(pairs.ravel(), minlength=n).astype(np.int16) if len(pairs) else np.zeros(n, np.int16)
    # defect groups: heavy atoms joined through heavy-heavy bonds, plus their bonded C
    heavy_idx = np.flatnonzero(species != C)
    atom_defect = np.full(n, -1, np.int32)
    defects = []
    if len(heavy_idx):
        hh = pairs[(species[pairs[:, 0]] != C) & (species[pairs[:, 1]] != C)] if len(pairs) else np.zeros((0, 2), int)
        g = coo_matrix((np.ones(len(hh)), (hh[:, 0], hh[:, 1])), shape=(n, n))
        _, lab = connected_components(g, directed=False)
        for L in np.unique(lab[heavy_idx]):
            members_h = heavy_idx[lab[heavy_idx] == L]
            m = np.isin(pairs, members_h)
            nb = np.unique(pairs[m.any(1)].ravel())
            nb_c = nb[species[nb] == C]
            members = np.concatenate([members_h, nb_c])
            atom_defect[members_h] = len(defects)
            atom_defect[nb_c] = np.where(atom_defect[nb_c] < 0, len(defects), atom_defect[nb_c])
            cx, cy = xy_px[members_h].mean(0)
            defects.append(Defect(kind=f"Si-{len(nb_c)}fold", formula=f"Si{len(members_h)}C{len(nb_c)}",
                                  members=members, centre_px=(float(cx), float(cy))))
    conf = np.full(n, 0.95, np.float32) if conf is None else conf
    atoms = Atoms(xy_px=np.asarray(xy_px, np.float64), species=species, confidence=conf,
                  class_prob=np.zeros((n, 3), np.float32), border=np.zeros(n, bool), pixel_size_A=ps)
    return Chemistry(atoms=atoms, bonds=pairs.astype(np.int32), bond_length_A=d,
                     coordination=coord, defects=defects, atom_defect=atom_defect)


@dataclass
class Movie:
    frames: list            # list of (Chemistry, gt_ids (N,) int64 with -1 for spurious, frame_shape)
    events: list            # dicts: frame, kind, atom_id
    drift_A: np.ndarray     # (F, 2) true per-frame shift of the content (frame t vs t-1), A
    ps: float
    flickers: list = field(default_factory=list)
    truth: list = field(default_factory=list)   # per frame (xy_px, species, ids) of every atom in the field


def make_movie(n_frames: int = 40, size_A: float = 40.0, ps: float = 0.1, n_si: int = 4,
               drift_A=(0.6, -0.3), drift_walk_A: float = 0.05, jitter_A: float = 0.05,
               p_miss: float = 0.01, p_spurious: float = 0.002, script: list | None = None,
               seed: int = 0, reverse_at: int | None = None, reverse_every: int | None = None,
               in_frame_drift: bool = False) -> Movie:
    """Simulate detections. ``script``: list of (frame, kind, si_index) with kind in
    {"hop", "3to4", "4to3", "flicker", "vacancy"}; ``si_index`` picks the dopant (for "vacancy": any
    interior C far from dopants). ``reverse_every``: the drift reverses every that many frames.
    ``in_frame_drift``: the content also moves while the frame is scanned row by row (as the
    simulator's slow scan: row y of frame t is shifted by ``y / H`` of the step to frame t + 1), so a
    reversal shears the frame: its top rows moved one way since the last frame, its bottom rows the
    other way. ``drifts`` then holds the shift of the middle row."""
    rng = np.random.default_rng(seed)
    world = honeycomb(size_A)
    n = len(world)
    species = np.zeros(n, np.int8)
    ids = np.arange(n, dtype=np.int64)
    alive = np.ones(n, bool)
    tree = cKDTree(world)
    centre = np.array([size_A / 2, size_A / 2])
    # dopants well inside the field, far apart
    cand = np.flatnonzero(np.linalg.norm(world - centre, axis=1) < size_A * 0.3)
    si = []
    for c in rng.permutation(cand):
        if all(np.linalg.norm(world[c] - world[s]) > 7.0 for s in si):
            si.append(int(c))
        if len(si) == n_si:
            break
    species[si] = SI
    nbrs = tree.query_ball_point(world, BOND_A * 1.1)
    pos = world.copy()
    script = sorted(script or [])
    events, flickers = [], []
    W = H = int(round(size_A / ps))
    off = np.array([2.0, 2.0])
    v = np.asarray(drift_A, float)
    frames, drifts, truth = [], [], []
    fourfold: dict[int, int] = {}      # si row -> ejected C row
    steps = None
    if in_frame_drift:                 # the whole path first: a frame's shear needs the next step
        r_dr = np.random.default_rng([seed, 7])
        vv, steps = np.asarray(drift_A, float), []
        for t in range(n_frames + 1):
            if (reverse_at is not None and t == reverse_at) or (reverse_every and t and t % reverse_every == 0):
                vv = -vv
            steps.append(vv + r_dr.normal(0, drift_walk_A, 2) if t else np.zeros(2))
    for t in range(n_frames):
        flick = set()
        for (f, kind, k) in script:
            if f != t:
                continue
            s = si[k] if kind != "vacancy" else None
            if kind == "hop":
                c = next(x for x in nbrs[s] if x != s and species[x] == C and alive[x])
                # site exchange (rows are sites): the Si's id moves to the C site and vice versa
                ids[[s, c]] = ids[[c, s]]
                species[[s, c]] = species[[c, s]]
                si[k] = c
                events.append({"frame": t, "kind": "si_hop", "atom_id": int(ids[c])})
            elif kind == "3to4":
                c = next(x for x in nbrs[s] if x != s and species[x] == C and alive[x])
                alive[c] = False
                fourfold[k] = c
                pos[s] = (world[s] + world[c]) / 2
                events.append({"frame": t, "kind": "si_3_to_4", "atom_id": int(ids[s])})
            elif kind == "4to3":
                c = fourfold.pop(k)
                alive[c] = True
                pos[s] = world[s]
                ids[c] = ids.max() + 1           # a new C fills the site
                events.append({"frame": t, "kind": "si_4_to_3", "atom_id": int(ids[s])})
            elif kind == "flicker":
                flick.add(s)
                flickers.append({"frame": t, "atom_id": int(ids[s])})
            elif kind == "vacancy":
                far = np.flatnonzero(alive & (species == C) & (np.linalg.norm(world - centre, axis=1) < size_A * 0.35))
                far = [x for x in far if all(np.linalg.norm(world[x] - world[q]) > 5.0 for q in si)]
                c = int(far[k])
                alive[c] = False
                events.append({"frame": t, "kind": "vacancy_created", "atom_id": int(ids[c])})
        if steps is not None:
            step = steps[t]
            off = off + step
            shear = (pos[:, 1:2] + off[1]) / (H * ps) * steps[t + 1]      # moved while scanned
            mid_prev = 0.5 * steps[t] if t else np.zeros(2)
            drifts.append(step + 0.5 * steps[t + 1] - mid_prev if t else np.zeros(2))
            xy = pos + off + shear + rng.normal(0, jitter_A, pos.shape)
        else:
            if (reverse_at is not None and t == reverse_at) or (reverse_every and t and t % reverse_every == 0):
                v = -v                                   # the stage drift reverses: atoms come back
            step = v + rng.normal(0, drift_walk_A, 2) if t else np.zeros(2)
            off = off + step
            drifts.append(step)
            xy = pos + off + rng.normal(0, jitter_A, pos.shape)
        xy_px = xy / ps
        inside = alive & np.all((xy_px >= 0) & (xy_px <= np.array([W - 1, H - 1])), axis=1)
        seen = inside & (rng.random(n) > p_miss)
        idx = np.flatnonzero(seen)
        sp = species[idx].copy()
        for s in flick:
            sp[idx == s] = C
        gid = ids[idx]
        n_fp = rng.poisson(p_spurious * len(idx))
        fp = rng.uniform(0, [W - 1, H - 1], (n_fp, 2))
        if n_fp:   # an atom finder never reports two atoms closer than ~0.6 bond: keep them apart
            dmin, _ = cKDTree(xy_px[idx]).query(fp)
            fp = fp[dmin * ps > 1.0]
            n_fp = len(fp)
        xy_all = np.vstack([xy_px[idx], fp])
        sp_all = np.concatenate([sp, np.zeros(n_fp, np.int8)])
        gid_all = np.concatenate([gid, np.full(n_fp, -1)])
        order = rng.permutation(len(xy_all))
        chem = chemistry_of(xy_all[order], sp_all[order], ps)
        frames.append((chem, gid_all[order], (H, W)))
        ti = np.flatnonzero(inside)
        truth.append((xy_px[ti], species[ti].copy(), ids[ti].copy()))
    return Movie(frames=frames, events=events, drift_A=np.array(drifts), ps=ps, flickers=flickers, truth=truth)


def id_switches(movie: Movie, track_ids: list) -> tuple[int, int]:
    """(identity switches, matched atom-frames): a GT atom whose track id differs from the one it had
    the last time it was seen counts one switch."""
    last: dict[int, int] = {}
    sw = total = 0
    for (chem, gid, _), tid in zip(movie.frames, track_ids):
        for g, h in zip(gid.tolist(), tid.tolist()):
            if g < 0:
                continue
            total += 1
            if g in last and last[g] != h:
                sw += 1
            last[g] = h
    return sw, total


def lattice_scene(size_px: int = 256, ps: float = 0.1, n_si: int = 1, seed: int = 0):
    """(world positions A, species) of a field with ``n_si`` Si near the centre, far apart."""
    rng = np.random.default_rng(seed)
    size = size_px * ps
    pts = honeycomb(size, rotation_deg=rng.uniform(0, 60))
    sp = np.zeros(len(pts), np.int8)
    centre = np.array([size / 2, size / 2])
    order = np.argsort(np.linalg.norm(pts - centre, axis=1))
    chosen = []
    for i in order:
        if all(np.linalg.norm(pts[i] - pts[j]) > 6.0 for j in chosen):
            chosen.append(i)
        if len(chosen) == n_si:
            break
    sp[chosen] = SI
    return pts, sp
