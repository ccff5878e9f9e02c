"""Frame -> network input and back: resampling to the model's pixel size, normalisation, padding, tiles.

All functions are pure numpy/scipy and shared by inference and training, so the network sees at
training time exactly what it sees live.

Geometry (the convention of :class:`engine.types.Probabilities`): a frame of ``(H, W)`` pixels of
``frame_px_A`` angstrom is mapped onto a model grid of ``(h, w) = round((H, W) * frame_px_A /
model_px_A)`` pixels covering exactly the same field of view; grid pixel ``j`` spans frame pixels
``[j * H / h, (j + 1) * H / h)`` (pixel edges), so its centre is at frame pixel ``(j + 0.5) * H / h - 0.5``.

Resampling is linear and separable, ``grid = Ry @ frame @ Rx.T`` with sparse matrices: when
shrinking (``H / h >= 1``) each grid pixel is the area-weighted mean of the frame pixels it covers
(flux-conserving, anti-aliased, so it also averages shot noise the way a coarser scan would); when
enlarging, bilinear interpolation.

Normalisation (stored in the model's ONNX metadata as ``NORMALISATION``): on the model grid,
``g = gaussian_filter(x, 1 px)``; ``lo, hi = percentile(g, 1), percentile(g, 95)``;
``x_norm = (x - lo) / (hi - lo)``. Smoothing before the percentiles makes ``lo``/``hi`` follow the
lattice (vacuum/hollow level and atom-peak level) rather than single-pixel shot noise, so the
normalised contrast is the same from 1e3 to 1e6 e/A^2 and independent of detector gain and offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse

from engine.chem.quantile import percentiles

#: Normalisation recipe (also written into the ONNX metadata).
NORMALISATION = {
    "method": "robust_percentile",
    "smooth_sigma_px": 1.0,
    "low_percentile": 1.0,
    "high_percentile": 95.0,
    "formula": "x_norm = (x - lo) / (hi - lo); lo, hi = percentiles of gaussian_filter(x, smooth_sigma_px) "
               "on the model grid after area-weighted resampling to the model pixel size",
}


def grid_shape(frame_shape: tuple[int, int], frame_px_A: float, model_px_A: float) -> tuple[int, int]:
    """Model-grid shape ``(h, w)`` covering the field of view of a ``frame_shape`` frame."""
    if not (frame_px_A > 0 and model_px_A > 0):
        raise ValueError(f"pixel sizes must be positive, got frame {frame_px_A} A, model {model_px_A} A")
    f = frame_px_A / model_px_A
    return tuple(max(1, int(round(n * f))) for n in frame_shape)  # type: ignore[return-value]


def resample_matrix(n_in: int, n_out: int) -> sparse.csr_matrix:
    """Sparse ``(n_out, n_in)`` matrix resampling a 1-D signal of ``n_in`` samples onto ``n_out``.

    Output sample ``j`` covers input edges ``[j*s, (j+1)*s)``, ``s = n_in / n_out``. ``s >= 1``:
    area-weighted mean (rows sum to 1); ``s < 1``: linear interpolation at the output centre.
    """
    s = n_in / n_out
    j = np.arange(n_out)
    if n_in == n_out:
        return sparse.identity(n_in, dtype=np.float32, format="csr")
    if s >= 1.0:
        a, b = j * s, (j + 1) * s                      # output footprint in input edge coordinates
        first = np.floor(a).astype(np.int64)
        last = np.minimum(np.ceil(b).astype(np.int64), n_in) - 1
        k = int((last - first).max()) + 1
        cols = first[:, None] + np.arange(k)[None, :]   # (n_out, k)
        lo = np.maximum(cols, a[:, None])
        hi = np.minimum(cols + 1, b[:, None])
        w = np.clip(hi - lo, 0.0, None) / s
        valid = (cols <= last[:, None]) & (w > 0)
        rows = np.broadcast_to(j[:, None], cols.shape)
        m = sparse.csr_matrix((w[valid], (rows[valid], cols[valid])), shape=(n_out, n_in), dtype=np.float64)
    else:
        c = (j + 0.5) * s - 0.5                          # output centre in input pixel coordinates
        c = np.clip(c, 0.0, n_in - 1.0)
        i0 = np.floor(c).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        t = c - i0
        m = sparse.csr_matrix((np.r_[1.0 - t, t], (np.r_[j, j], np.r_[i0, i1])), shape=(n_out, n_in))
        m.sum_duplicates()
    return m.astype(np.float32).tocsr()


class Resampler:
    """Separable frame -> model-grid resampler for one frame geometry (matrices built once)."""

    def __init__(self, frame_shape: tuple[int, int], frame_px_A: float, model_px_A: float):
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.frame_px_A = float(frame_px_A)
        self.model_px_A = float(model_px_A)
        self.grid_shape = grid_shape(self.frame_shape, frame_px_A, model_px_A)
        H, W = self.frame_shape
        h, w = self.grid_shape
        self.identity = (H, W) == (h, w)
        self._ry = resample_matrix(H, h)
        self._rxt = resample_matrix(W, w).T.tocsr()

    @property
    def grid_px_A(self) -> float:
        """Actual angstrom per grid pixel (mean of both axes; differs from model_px_A by rounding)."""
        H, W = self.frame_shape
        h, w = self.grid_shape
        return 0.5 * self.frame_px_A * (H / h + W / w)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Resample an ``(H, W)`` frame of any real dtype to a float32 ``(h, w)`` grid."""
        x = np.asarray(frame)
        if x.shape != self.frame_shape:
            raise ValueError(f"frame shape {x.shape} != resampler shape {self.frame_shape}")
        if self.identity:
            return x.astype(np.float32, copy=True)
        x = x.astype(np.float32, copy=False)
        tmp = self._ry @ x                                   # (h, W)
        return np.ascontiguousarray((self._rxt.T @ tmp.T).T, dtype=np.float32)  # (h, w)


def normalise(x: np.ndarray, recipe: dict = NORMALISATION) -> np.ndarray:
    """Robust normalisation of a model-grid image (see module docstring). Returns float32."""
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=float(np.nanmedian(x)) if np.isfinite(x).any() else 0.0,
                          posinf=0.0, neginf=0.0)
    lo, hi = normalisation_levels(x, recipe)
    return ((x - lo) * (1.0 / (hi - lo))).astype(np.float32, copy=False)


def normalisation_levels(x: np.ndarray, recipe: dict = NORMALISATION) -> tuple[float, float]:
    """``(lo, hi)`` of the normalisation for image ``x`` (model grid)."""
    g = ndimage.gaussian_filter(np.asarray(x, dtype=np.float32), float(recipe["smooth_sigma_px"]), mode="nearest")
    # a strided subsample is enough for percentiles of a smoothed image and much cheaper
    step = max(1, int(np.sqrt(g.size / 65536.0)))
    lo, hi = percentiles(g[::step, ::step], (recipe["low_percentile"], recipe["high_percentile"]))
    if not hi - lo > 1e-12 * max(1.0, abs(hi)):
        hi = lo + 1.0                                       # flat frame: avoid dividing by zero
    return lo, hi


def pad_to_multiple(x: np.ndarray, multiple: int, min_side: int = 1) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad an ``(h, w)`` image at the bottom/right to multiples of ``multiple`` (and at least
    ``min_side`` per side). Returns the padded image and the original ``(h, w)`` (crop ``[:h, :w]``).
    """
    h, w = x.shape
    th = max(-(-h // multiple) * multiple, -(-min_side // multiple) * multiple)
    tw = max(-(-w // multiple) * multiple, -(-min_side // multiple) * multiple)
    if (th, tw) == (h, w):
        return x, (h, w)
    return np.pad(x, ((0, th - h), (0, tw - w)), mode="reflect"), (h, w)


@dataclass(frozen=True)
class Tile:
    """One tile: input window ``[y0:y1, x0:x1]`` and the core ``[cy0:cy1, cx0:cx1]`` it owns (grid px)."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


def _axis_tiles(n: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int, int, int]]:
    """Split ``[0, n)`` into windows ``(a, b)``, ``b - a <= tile``, with cores ``(ca, cb)`` partitioning it.

    Window starts are multiples of ``multiple`` (so pooling cells align with the whole-frame run);
    each core stays at least ``overlap // 2`` px inside its window except at the frame's ends.
    """
    if n <= tile:
        return [(0, n, 0, n)]
    margin = overlap // 2
    step = tile - overlap
    if step < multiple:
        raise ValueError(f"tile_overlap_px ({overlap}) must be smaller than tile_px ({tile}) - {multiple}")
    wins = []
    a = 0
    while a + tile < n:
        wins.append((a, a + tile))
        a = (a + step) // multiple * multiple
    last = -(-(n - tile) // multiple) * multiple            # ceil to the multiple: window <= tile
    wins.append((last, n))
    res = []
    for k, (a, b) in enumerate(wins):
        ca = 0 if k == 0 else res[-1][3]
        cb = n if k == len(wins) - 1 else b - margin
        res.append((a, b, ca, cb))
    return res


def make_tiles(shape: tuple[int, int], tile_px: int, overlap_px: int, multiple: int) -> list[Tile]:
    """Overlapping tiles covering ``shape`` (grid px); window starts are multiples of ``multiple``."""
    if tile_px % multiple:
        raise ValueError(f"tile_px ({tile_px}) must be a multiple of {multiple}")
    ys = _axis_tiles(shape[0], tile_px, overlap_px, multiple)
    xs = _axis_tiles(shape[1], tile_px, overlap_px, multiple)
    return [Tile(a, b, c, d, ca, cb, cc, cd) for (a, b, ca, cb) in ys for (c, d, cc, cd) in xs]
