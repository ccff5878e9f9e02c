"""Atoms inside the frame only, the edge flag, and the C-atom SNR measured from the frame itself.

* :func:`drop_outside` -- an atom whose blob is cut by the frame edge has its centroid pulled inside
  (a centre up to ~0.5 A outside reads as ~0.1-0.2 A inside); atoms closer than ``edge_drop_A`` to the
  border are therefore not reported (the cost: true atoms in that thin band are missed).
* :func:`edge_flags` -- atoms within half a C-C bond (0.71 A) of the border (``edge`` in atoms.csv).
* :func:`estimate_snr` -- the C-atom signal-to-noise ratio in the sense of
  :meth:`engine.sim.imaging.ImagingParams.atom_snr`, from the image and the atoms the network found
  only (no simulator truth): the C atoms' peak height over the hexagon centres, times the probe's
  area, over the pixel noise (Immerkaer's Laplacian estimate, insensitive to the smooth lattice).
"""

from __future__ import annotations

import functools

import numpy as np

from engine.types import Atoms

HALF_BOND_A = 0.71
#: Calibration of :func:`estimate_snr` against ImagingParams.atom_snr (lab/health/evaluate.py,
#: training-side seeds, never the held-out one).
SNR_SCALE = 1.07
#: The probe core assumed by the SNR estimate (A, FWHM): the middle of the simulator's 0.7-1.3 A.
PROBE_FWHM_A = 1.0
#: Fewer hexagons than this (a frame that is mostly hole, or where the network found little): no estimate.
MIN_HEXAGONS = 10


def inside_mask(xy_px: np.ndarray, frame_shape, margin_px: float) -> np.ndarray:
    """True for atoms at least ``margin_px`` inside the frame (pixel centres at integers)."""
    xy = np.asarray(xy_px, np.float64).reshape(-1, 2)
    H, W = frame_shape
    lo = -0.5 + margin_px
    return (xy[:, 0] >= lo) & (xy[:, 1] >= lo) & (xy[:, 0] <= W - 0.5 - margin_px) & (xy[:, 1] <= H - 0.5 - margin_px)


def drop_outside(atoms: Atoms, frame_shape, edge_drop_A: float) -> Atoms:
    """``atoms`` without those closer than ``edge_drop_A`` to the border (or outside it)."""
    if not len(atoms):
        return atoms
    keep = inside_mask(atoms.xy_px, frame_shape, edge_drop_A / float(atoms.pixel_size_A))
    if keep.all():
        return atoms
    from engine.chem.atoms import subset

    return subset(atoms, keep)


def edge_flags(xy_px: np.ndarray, frame_shape, pixel_size_A: float) -> np.ndarray:
    """(N,) bool: within half a bond length (0.71 A) of the frame border."""
    if frame_shape is None:
        return np.zeros(len(xy_px), bool)
    return ~inside_mask(xy_px, frame_shape, HALF_BOND_A / float(pixel_size_A))


def estimate_snr(image: np.ndarray, chem, maps=None) -> float:
    """Estimated C-atom SNR of the frame (nan when it cannot be measured: < 20 C atoms or < MIN_HEXAGONS
    hexagons). ``maps``: the frame's :func:`engine.chem.atoms.contrast_maps`, if already computed (the
    pixel noise it measured for the vacuum check is used again)."""
    from engine.chem.atoms import sample_bilinear
    from engine.chem.maps import noise_of
    from engine.chem.quantile import nanmedian

    atoms = chem.atoms
    img = np.asarray(image)
    if img.ndim != 2:
        return float("nan")
    # an integer frame is sampled as it is (no float copy of the whole frame): values as float32
    out_dtype = img.dtype if img.dtype in (np.float32, np.float64) else np.float32
    ps = float(atoms.pixel_size_A)
    c = np.asarray(atoms.species) == 0
    centres = _hexagon_centres(np.asarray(atoms.xy_px, np.float64), chem.rings, 150)
    if c.sum() < 20 or centres is None:
        return float("nan")
    sigma = noise_of(maps, image)
    if not sigma > 0:
        return float("nan")
    xy = np.asarray(atoms.xy_px, np.float64)

    # mean over a 0.35 A disc: wide enough that the noise the network may have locked onto averages out
    step = max(1.0, 0.07 / ps)
    off = _disc_offsets(ps)

    def disc_mean(p):
        if step == 1.0:
            return _disc_means_unit_step(img, p, ps, out_dtype)
        q = (p[:, None, :] + off[None]).reshape(-1, 2)
        v = sample_bilinear((img,), q[:, 1], q[:, 0])[0].astype(out_dtype)
        return v.reshape(len(p), -1).mean(1)

    cxy = xy.compress(c, axis=0)
    cxy = cxy[:: max(1, len(cxy) // 300)]          # a few hundred atoms fix the median
    h = nanmedian(disc_mean(cxy)) - nanmedian(disc_mean(centres))
    sp = PROBE_FWHM_A / 2.3548
    return SNR_SCALE * 1.41 * h * sp / (sigma * ps)


@functools.lru_cache(maxsize=16)
def _disc_offsets(ps: float) -> np.ndarray:
    """(K, 2) sample offsets (px) of the 0.35 A disc of :func:`estimate_snr` (read-only, once per size)."""
    step = max(1.0, 0.07 / ps)
    g = np.arange(-0.35 / ps, 0.35 / ps + 1e-9, step)
    off = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    off = off[np.hypot(off[:, 0], off[:, 1]) <= 0.35 / ps + 1e-9]
    off.setflags(write=False)
    return off


@functools.lru_cache(maxsize=16)
def _window_offsets(k: int, w: int) -> np.ndarray:
    """Flat offsets of a k x k window in an image with rows of ``w`` pixels, row by row (read-only)."""
    d = np.arange(k)
    off = (d[:, None] * w + d[None, :]).ravel()
    off.setflags(write=False)
    return off


@functools.lru_cache(maxsize=16)
def _corner_masks(key: tuple, k: int) -> np.ndarray:
    """(4, k * k) how often each window pixel is the (0, 0), (0, 1), (1, 0), (1, 1) corner of a
    sample at the integer offsets ``key`` ((x, y) pairs) (read-only, once per disc)."""
    d = np.array(key, np.int64).reshape(-1, 2)
    masks = np.zeros((4, k, k))
    for c, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        np.add.at(masks[c], (d[:, 1] + dy, d[:, 0] + dx), 1.0)
    masks = masks.reshape(4, -1).T.copy()
    masks.setflags(write=False)
    return masks


@functools.lru_cache(maxsize=16)
def _unit_step_stencil(ps: float) -> tuple:
    """``(lo, k, masks)`` of :func:`_disc_means_unit_step` for the disc of :func:`_disc_offsets` (``ps``):
    its lowest offset (x, y), the window side and the window's corner masks (once per size)."""
    off = _disc_offsets(ps)
    lo = off.min(0)
    lo.setflags(write=False)
    d = np.rint(off - lo).astype(np.int64)                  # integer offsets of the samples (x, y)
    k = int(d.max()) + 2                                    # window side: the samples and one more
    return lo, k, _corner_masks(tuple(int(v) for v in d.ravel()), k)


def _hexagon_centres(xy: np.ndarray, rings, first: int) -> np.ndarray | None:
    """(K, 2) mean position of the first ``first`` hexagons' corners; None with fewer than MIN_HEXAGONS."""
    sizes = getattr(rings, "sizes", None)
    if sizes is not None:                                  # a RingList: flat arrays, no loop
        six = np.flatnonzero(np.asarray(sizes) == 6)
        if len(six) < MIN_HEXAGONS:
            return None
        idx = np.asarray(rings.atoms)[np.asarray(rings.offsets)[six[:first], None] + np.arange(6)]
        c = xy.take(idx, axis=0)                           # (K, 6, 2): the corners summed in order, as .mean(1)
        s = c[:, 0] + c[:, 1]
        for k in range(2, 6):
            s = s + c[:, k]
        return s / 6
    hexes = [r for r in (rings or []) if len(r) == 6]
    if len(hexes) < MIN_HEXAGONS:
        return None
    return np.array([xy[np.asarray(r)].mean(0) for r in hexes[:first]])


def _disc_means_unit_step(img: np.ndarray, p: np.ndarray, ps: float, out_dtype) -> np.ndarray:
    """(N,) mean of the bilinearly interpolated ``img`` at ``p[n] + off`` (``off``: :func:`_disc_offsets`
    of ``ps``, offsets 1 px apart): the
    samples of one point share their interpolation weights, so the mean is a fixed stencil per
    corner over one window of pixels, gathered once (points whose samples leave the frame, where
    interpolation clamps, take the direct route)."""
    from engine.chem.atoms import sample_bilinear
    from engine.chem.linalg import matmul

    H, W = img.shape
    off = _disc_offsets(ps)
    lo, k, masks = _unit_step_stencil(ps)
    base = np.floor(p + lo)                                 # (x, y) of the window's first pixel
    fx, fy = (p + lo - base).T
    base = base.astype(np.int64)
    inner = (base[:, 0] >= 0) & (base[:, 1] >= 0) & (base[:, 0] + k <= W) & (base[:, 1] + k <= H)
    out = np.empty(len(p))
    if (~inner).any():
        e = np.flatnonzero(~inner)
        q = (p[e, None, :] + off[None]).reshape(-1, 2)
        out[e] = sample_bilinear((img,), q[:, 1], q[:, 0])[0].astype(out_dtype).reshape(len(e), -1).mean(1)
    if inner.any() and H >= k and W >= k:
        i = np.flatnonzero(inner)
        flat = np.ascontiguousarray(img).ravel()                 # (a frame is contiguous: no copy)
        win = flat.take((base[i, 1] * W + base[i, 0])[:, None] + _window_offsets(k, W)[None])   # one gather
        s = matmul(win.astype(np.float64), masks)               # sums at the 4 corners' offsets
        wy, wx = fy[i], fx[i]
        out[i] = ((1 - wy) * (1 - wx) * s[:, 0] + (1 - wy) * wx * s[:, 1] + wy * (1 - wx) * s[:, 2]
                  + wy * wx * s[:, 3]) / len(off)
    return out
