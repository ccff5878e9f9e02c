"""Synthetic network outputs: probability maps rendered from known atom positions.

Used by the tests and the benchmark to exercise the atom finder without the network. A map is a
``(3, h, w)`` float32 array (background, C, Si) on a model grid of ``pixel_size_A``: each atom adds a
blob ``exp(-r^2 / (2 sigma^2))`` (optionally flattened into a saturating disc, like a network trained
on disc masks), split between the C and Si channels by ``confusion``; the background channel is what
is left; Gaussian noise is added and every pixel renormalised to sum to 1.
"""

from __future__ import annotations

import numpy as np

from engine.types import Probabilities


def render_probabilities(xy_A: np.ndarray, species: np.ndarray, shape: tuple[int, int],
                         pixel_size_A: float, *, sigma_A: float = 0.3, saturate: float = 1.0,
                         confusion: float = 0.0, noise: float = 0.0, frame_shape: tuple[int, int] | None = None,
                         frame_pixel_size_A: float | None = None, origin_A: tuple[float, float] = (0.0, 0.0),
                         rng: np.random.Generator | None = None) -> Probabilities:
    """Render a :class:`Probabilities` for atoms at ``xy_A`` (N, 2) with species codes (N,).

    ``shape``: (h, w) of the model grid; grid pixel (col, row) has its centre at
    ``origin_A + (col, row) * pixel_size_A``. ``saturate`` > 1 clips ``saturate * blob`` at 1
    (flat-topped blobs). ``confusion``: fraction of each atom's probability put in the wrong
    species channel. ``noise``: std of additive Gaussian noise before renormalisation. The frame
    geometry defaults to the grid itself.
    """
    rng = rng or np.random.default_rng(0)
    h, w = shape
    xy = (np.asarray(xy_A, float) - np.asarray(origin_A)) / pixel_size_A
    sp = np.asarray(species)
    sig = sigma_A / pixel_size_A
    rad = int(np.ceil(4 * sig))
    atom = np.zeros((2, h, w), np.float32)
    off = np.arange(-rad, rad + 1)
    cx = np.rint(xy[:, 0]).astype(int)
    cy = np.rint(xy[:, 1]).astype(int)
    cols = cx[:, None] + off[None, :]                    # (N, K)
    rows = cy[:, None] + off[None, :]
    gx = np.exp(-((cols - xy[:, :1]) ** 2) / (2 * sig**2))
    gy = np.exp(-((rows - xy[:, 1:2]) ** 2) / (2 * sig**2))
    blob = np.minimum(saturate * gy[:, :, None] * gx[:, None, :], 1.0)   # (N, K, K)
    rr = np.broadcast_to(rows[:, :, None], blob.shape)
    cc = np.broadcast_to(cols[:, None, :], blob.shape)
    ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    heavy = (sp != 0).astype(np.float32)
    frac_si = np.abs(heavy - confusion)                  # share of the Si channel
    for ch, share in ((0, 1.0 - frac_si), (1, frac_si)):
        vals = (blob * share[:, None, None])[ok]
        np.maximum.at(atom[ch], (rr[ok], cc[ok]), vals.astype(np.float32))
    total = atom.sum(0)
    over = total > 1
    atom[:, over] /= total[over]
    p = np.concatenate([(1.0 - atom.sum(0))[None], atom], 0)
    if noise > 0:
        p = np.clip(p + rng.normal(0, noise, p.shape).astype(np.float32), 1e-4, None)
        p /= p.sum(0, keepdims=True)
    return Probabilities(p.astype(np.float32), float(pixel_size_A),
                         frame_shape or (h, w), float(frame_pixel_size_A or pixel_size_A))


def grid_for(xy_A: np.ndarray, pixel_size_A: float, pad_A: float = 0.0) -> tuple[int, int]:
    """(h, w) of a grid starting at 0 that covers all of ``xy_A`` plus ``pad_A``."""
    hi = np.asarray(xy_A).max(0) + pad_A
    return int(np.ceil(hi[1] / pixel_size_A)) + 1, int(np.ceil(hi[0] / pixel_size_A)) + 1
