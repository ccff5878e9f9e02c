"""Plain-data graphene detections for tracker benchmarks, and a quick HAADF-like renderer.

``lattice_frames(n_atoms, n_frames, ...)`` yields ``Chemistry`` objects of a honeycomb lattice (C-C
1.42 A) with a few Si, global drift, thermal jitter and missed detections, with a minimal lattice
graph (KD-tree bonds with per-pair cutoffs, coordination; no defect groups). The chemistry is built
before timing starts; only the tracker is measured. ``render_frame`` draws atoms as Gaussian probes
with Z^gamma contrast and Poisson noise (benchmarks and tests of the pipeline; the physically
grounded simulator is :mod:`engine.sim`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from engine.types import C, SI, Atoms, Chemistry

BOND_A = 1.42
_CUT = np.array([1.75, 2.10, 2.50])          # C-C, Si-C, Si-Si


def honeycomb(width_A: float, height_A: float, rotation_deg: float = 7.0, margin_A: float = 10.0) -> np.ndarray:
    """(N, 2) positions (A) of a rotated honeycomb covering [-margin, size + margin]."""
    a = BOND_A * np.sqrt(3)
    a1 = np.array([a, 0.0])
    a2 = np.array([a / 2, a * np.sqrt(3) / 2])
    n = int((max(width_A, height_A) + 2 * margin_A) / a * 1.6) + 4
    i, j = np.meshgrid(np.arange(-n, n), np.arange(-n, n))
    base = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    pts = np.vstack([base, base + np.array([a / 2, a / (2 * np.sqrt(3))])])
    th = np.deg2rad(rotation_deg)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    pts = pts @ R.T + np.array([width_A, height_A]) / 2
    keep = np.all((pts > -margin_A) & (pts < np.array([width_A, height_A]) + margin_A), axis=1)
    return pts[keep]


def minimal_chemistry(xy_px: np.ndarray, species: np.ndarray, pixel_size_A: float,
                      frame_shape: tuple[int, int] | None = None) -> Chemistry:
    """Bonds by per-pair cutoffs (C-C 1.75, Si-C 2.10, Si-Si 2.50 A), coordination; no defects."""
    n = len(xy_px)
    species = np.asarray(species, np.int8)
    xy_A = xy_px * pixel_size_A
    pairs = cKDTree(xy_A).query_pairs(_CUT.max(), output_type="ndarray") if n else np.zeros((0, 2), int)
    if len(pairs):
        d = np.linalg.norm(xy_A[pairs[:, 0]] - xy_A[pairs[:, 1]], axis=1)
        heavy = (species[pairs[:, 0]] != C).astype(int) + (species[pairs[:, 1]] != C).astype(int)
        ok = d <= _CUT[heavy]
        pairs, d = pairs[ok], d[ok]
    else:
        d = np.zeros(0)
    coord = np.bincount(pairs.ravel(), minlength=n).astype(np.int16)
    atoms = Atoms(xy_px=np.asarray(xy_px, np.float64), species=species, confidence=np.full(n, 0.95, np.float32),
                  class_prob=np.zeros((n, 3), np.float32), border=np.zeros(n, bool), pixel_size_A=pixel_size_A)
    return Chemistry(atoms=atoms, bonds=pairs.astype(np.int32), bond_length_A=d, coordination=coord,
                     defects=[], atom_defect=np.full(n, -1, np.int32))


def lattice_frames(n_atoms: int, n_frames: int, pixel_size_A: float = 0.1, drift_A=(0.4, -0.2),
                   jitter_A: float = 0.05, p_miss: float = 0.01, si_fraction: float = 0.005, seed: int = 0):
    """List of (Chemistry, frame_shape) with about ``n_atoms`` atoms per frame."""
    rng = np.random.default_rng(seed)
    side = np.sqrt(n_atoms / 0.38 / 0.93)          # graphene: 0.38 atoms per A^2 (7 % missed/edge)
    world = honeycomb(side, side)
    sp = np.where(rng.random(len(world)) < si_fraction, SI, C).astype(np.int8)
    W = H = int(round(side / pixel_size_A))
    off = np.zeros(2)
    out = []
    for t in range(n_frames):
        off = off + (np.asarray(drift_A) if t else 0.0)
        xy = (world + off + rng.normal(0, jitter_A, world.shape)) / pixel_size_A
        keep = np.all((xy >= 0) & (xy <= [W - 1, H - 1]), axis=1) & (rng.random(len(world)) > p_miss)
        out.append((minimal_chemistry(xy[keep], sp[keep], pixel_size_A, (H, W)), (H, W)))
    return out


def render_frame(xy_px: np.ndarray, species: np.ndarray, shape: tuple[int, int], ps: float,
                 dose_e_per_A2: float = 2e4, gamma: float = 1.7, probe_A: float = 0.45,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """A HAADF-like frame (float32): Gaussian probe per atom, intensity ~ Z^gamma (C 6, Si 14,
    other 30), Poisson noise at the dose. Atoms are (x=col, y=row) in pixels."""
    rng = rng or np.random.default_rng(0)
    H, W = shape
    Z = np.array([6.0, 14.0, 30.0])[np.asarray(species, int)] / 6.0
    sig = probe_A / ps
    rad = int(np.ceil(3.5 * sig))
    P = 2 * rad + 1
    img = np.zeros((H + 2 * P, W + 2 * P))
    off = np.arange(-rad, rad + 1)
    ix = np.floor(xy_px[:, 0]).astype(int)
    iy = np.floor(xy_px[:, 1]).astype(int)
    ok = (ix > -rad) & (ix < W + rad) & (iy > -rad) & (iy < H + rad)
    fx, fy, ix, iy, amp = xy_px[ok, 0] - ix[ok], xy_px[ok, 1] - iy[ok], ix[ok], iy[ok], Z[ok] ** gamma
    gx = np.exp(-((off[None, :] - fx[:, None]) ** 2) / (2 * sig * sig))        # (N, K)
    gy = np.exp(-((off[None, :] - fy[:, None]) ** 2) / (2 * sig * sig))
    patches = amp[:, None, None] * gy[:, :, None] * gx[:, None, :]              # (N, K, K)
    rows = (iy[:, None] + off[None, :] + P)[:, :, None]
    cols = (ix[:, None] + off[None, :] + P)[:, None, :]
    np.add.at(img, (np.broadcast_to(rows, patches.shape), np.broadcast_to(cols, patches.shape)), patches)
    img = img[P: P + H, P: P + W]
    electrons = dose_e_per_A2 * ps * ps
    lam = (img * 0.3 + 0.02) * electrons
    return rng.poisson(lam).astype(np.float32)
