"""Fast 2D filters for the atom finder (:mod:`engine.chem.atoms`), each one job, on float32/integer
maps: a running maximum/minimum (:func:`shift_max`), edge or constant padding (:func:`pad2d`), the
5-tap binomial smoothing (:func:`binomial5`) and block means (:func:`block_mean`). They do what
``scipy.ndimage.maximum_filter1d`` / ``np.pad`` / ``ndimage.correlate1d`` / a reshape-mean do, with
the same results (tests/test_chem_filters.py), at a fraction of the cost on 512^2-2048^2 maps (the
per-frame budget of issue 20).
"""

from __future__ import annotations

import functools

import numpy as np

from engine.chem.linalg import GEMM_MAX_MNK


def shift_max(a: np.ndarray, size: int, axis: int, op=np.maximum) -> np.ndarray:
    """Running maximum (``op=np.minimum``: minimum) over ``size`` samples along ``axis`` (window
    centred, samples outside the array ignored).

    Log-step doubling: about ``log2(size)`` ``op`` calls whatever the window, all on the flattened
    padded array (a 2D slice shifted by a column is ~3x slower in numpy than the same 1D shift;
    along axis 1 the samples that wrap into the next row are never read by a kept output),
    alternating between two buffers (a fresh array per step costs several times the step on
    large frames).
    """
    if size <= 1:
        return a
    lo = size // 2
    fill = -np.inf if op is np.maximum else np.inf
    pad = [(0, 0), (0, 0)]
    pad[axis] = (lo, size - 1 - lo)
    b = pad2d(a, pad, fill)
    unit = 1 if axis == 1 else b.shape[1]           # one sample along the axis, in flat elements
    cur, other = b.ravel(), np.empty(b.size, b.dtype)
    m, width = b.size, 1                            # cur[k] = op(flat[k : k + width * unit : unit]), k < m
    while width * 2 <= size:
        step = width * unit
        op(cur[:m - step], cur[step:m], out=other[:m - step])
        cur, other, m, width = other, cur, m - step, width * 2
    rest = (size - width) * unit
    if rest:
        op(cur[:m - rest], cur[rest:m], out=other[:m - rest])
        cur = other
    if axis == 1:
        return cur.reshape(b.shape)[:, :a.shape[1]]
    return cur[:a.shape[0] * unit].reshape(a.shape[0], unit)


def pad2d(a: np.ndarray, widths, fill=None) -> np.ndarray:
    """``np.pad(a, widths, mode="constant", constant_values=fill)`` (``fill=None``: ``mode="edge"``)
    for 2D ``a``, without np.pad's per-call overhead (~30 us, several calls per frame)."""
    (t, b_), (l, r) = widths
    h, w = a.shape
    out = np.empty((h + t + b_, w + l + r), a.dtype)
    out[t:t + h, l:l + w] = a
    if fill is None:
        if l:
            out[t:t + h, :l] = a[:, :1]
        if r:
            out[t:t + h, l + w:] = a[:, -1:]
        if t:
            out[:t] = out[t]
        if b_:
            out[t + h:] = out[t + h - 1]
    else:
        out[:t] = fill
        out[t + h:] = fill
        out[t:t + h, :l] = fill
        out[t:t + h, l + w:] = fill
    return out


def binomial5(a: np.ndarray) -> np.ndarray:
    """Separable [1, 4, 6, 4, 1] / 16 smoothing (sigma = 1 px), edges replicated.

    Both passes run on the flattened padded array (see :func:`shift_max`) into reused buffers, in
    the order and with the rounding of ``(b[:, :-4] + b[:, 4:]) * c1 + ...`` along axis 1, then the
    same along axis 0."""
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)               # (integer sums would wrap around in their own type)
    h, w = a.shape
    b = pad2d(a, ((2, 2), (2, 2)))
    c1, c4, c6 = np.float32(1 / 16), np.float32(4 / 16), np.float32(6 / 16)
    dt = np.result_type(b.dtype, np.float32)
    f = b.ravel()
    m = f.size - 4
    r = np.empty(f.size, dt)
    t = np.empty(f.size, dt)
    x, y = r[:m], t[:m]
    np.add(f[:m], f[4:], out=x)
    x *= c1
    np.add(f[1:m + 1], f[3:m + 3], out=y)
    y *= c4
    x += y
    np.multiply(f[2:m + 2], c6, out=y)
    x += y
    r[m:] = 0                                      # junk columns of the last row: keep them finite
    # the same along axis 0, on whole padded rows (stride s): the last 4 columns of each row are junk
    s = b.shape[1]
    n = h * s
    x, y = t[:n], (f[:n] if dt == b.dtype else np.empty(n, dt))     # (b is read no more)
    np.add(r[:n], r[4 * s:4 * s + n], out=x)
    x *= c1
    np.add(r[s:s + n], r[3 * s:3 * s + n], out=y)
    y *= c4
    x += y
    np.multiply(r[2 * s:2 * s + n], c6, out=y)
    x += y
    out = np.empty((h, w), dt)
    out[...] = x.reshape(h, s)[:, :w]
    return out


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over ``f`` x ``f`` blocks (edges replicated up to a multiple of ``f``)."""
    out = block_sum(a, f)
    out /= np.float32(f * f)
    return out


def block_sum(a: np.ndarray, f: int) -> np.ndarray:
    """Sum over ``f`` x ``f`` blocks, float32 (edges replicated up to a multiple of ``f``). A frame of 8- or
    16-bit integers in whole blocks (``f`` <= 16) is summed rows first, straight from its integers: every
    partial sum is an integer below 2^24, exact in float32 in any order, so the result is the same bit for
    bit, in about half the time (contiguous reads, no float32 copy of the frame)."""
    a = np.asarray(a)
    h, w = a.shape
    if a.dtype.kind in "ui" and a.dtype.itemsize <= 2 and 1 < f <= 16 and h % f == 0 and w % f == 0:
        r = np.add.reduce(a.reshape(h // f, f, w), axis=1, dtype=np.float32)
        out = r[:, 0::f] + r[:, 1::f]
        for j in range(2, f):
            out += r[:, j::f]
        return out
    H, W = -(-h // f) * f, -(-w // f) * f
    if (H, W) != (h, w):
        a = pad2d(a, ((0, H - h), (0, W - w)))
    # one conversion to float32 (8/16-bit integers are exact in it), then strided sums: ~25x faster
    # than a mean over reshaped axes, and summing float32 columns beats mixing integers into float32
    b = np.asarray(a, np.float32)
    cols = b[:, 0::f] + b[:, 1::f] if f > 1 else b[:, 0::f].copy()
    for j in range(2, f):
        cols += b[:, j::f]
    out = cols[0::f] + cols[1::f] if f > 1 else cols[0::f].copy()
    for i in range(2, f):
        out += cols[i::f]
    return out


#: :func:`gaussian_filter` uses banded matrix products up to this side (px), ``ndimage``'s separable
#: filter above (measured: 2-4x faster up to ~170 px, even at ~340 px, slower beyond)
MATRIX_MAX_SIDE = 256


@functools.lru_cache(maxsize=32)
def gaussian_matrix(n: int, sigma: float, truncate: float = 4.0, mode: str = "reflect") -> np.ndarray:
    """(n, n) float64 matrix ``G`` with ``G @ x`` = ``ndimage.gaussian_filter1d(x, sigma, axis=0,
    truncate=truncate, mode=mode)`` for ``x`` of length ``n``; ``mode``: "reflect" (d c b a | a b c
    d), "nearest" (a a | a b) or "constant" (0 outside). Read-only, computed once per (n, sigma, mode)."""
    r = int(truncate * float(sigma) + 0.5)
    t = np.arange(-r, r + 1)
    g = np.exp(-0.5 / (float(sigma) ** 2) * t.astype(np.float64) ** 2)
    g /= g.sum()
    idx = np.arange(n)[:, None] + t[None]
    w = np.tile(g, n)
    if mode == "reflect":
        idx = np.mod(idx, 2 * n)
        idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
    elif mode == "nearest":
        idx = np.clip(idx, 0, n - 1)
    elif mode == "constant":
        w = np.where(((idx >= 0) & (idx < n)).ravel(), w, 0.0)
        idx = np.clip(idx, 0, n - 1)
    else:
        raise ValueError(f"mode {mode!r}: reflect, nearest or constant")
    m = np.zeros((n, n))
    np.add.at(m, (np.repeat(np.arange(n), len(t)), idx.ravel()), w)
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=64)
def _band_blocks(n: int, sigma: float, truncate: float, mode: str, other: int) -> tuple:
    """:func:`gaussian_matrix` cut into row blocks ``(r0, r1, lo, hi, G[r0:r1, lo:hi])`` holding all
    of each block's non-zero columns, each block small enough that its product with ``other``
    columns stays on the calling thread (:data:`engine.chem.linalg.GEMM_MAX_MNK`); read-only."""
    g = gaussian_matrix(n, sigma, truncate, mode)
    nz = g != 0
    lo_row = nz.argmax(1)
    hi_row = n - nz[:, ::-1].argmax(1)
    out, r0 = [], 0
    while r0 < n:
        r1 = r0 + 1
        while r1 < n and (r1 + 1 - r0) * (max(hi_row[r0:r1 + 1]) - min(lo_row[r0:r1 + 1])) * other <= GEMM_MAX_MNK:
            r1 += 1
        lo, hi = int(lo_row[r0:r1].min()), int(hi_row[r0:r1].max())
        blk = np.ascontiguousarray(g[r0:r1, lo:hi])
        blk.setflags(write=False)
        out.append((r0, r1, lo, hi, blk))
        r0 = r1
    return tuple(out)


def _band_product(x: np.ndarray, sigma: float, truncate: float, mode: str) -> np.ndarray:
    """``gaussian_matrix(len(x), ...) @ x`` for float64 (n, m) ``x``, block by block over the band."""
    out = np.empty(x.shape)
    for r0, r1, lo, hi, g in _band_blocks(x.shape[0], float(sigma), float(truncate), mode, x.shape[1]):
        np.matmul(g, x[lo:hi], out=out[r0:r1])
    return out


def gaussian_filter(a: np.ndarray, sigma: float, mode: str = "reflect", truncate: float = 4.0) -> np.ndarray:
    """``ndimage.gaussian_filter(a, sigma, mode=mode, truncate=truncate)`` of a 2D float array, or of
    each map of a (S, h, w) stack, to float rounding: by :func:`gaussian_filter_mm` up to
    :data:`MATRIX_MAX_SIDE`, by ``ndimage`` above. Returns ``a``'s float type (float64 for integers)."""
    a = np.asarray(a)
    if max(a.shape[-2:]) <= MATRIX_MAX_SIDE:
        return gaussian_filter_mm(a, sigma, mode, truncate)
    from scipy import ndimage

    x = np.asarray(a, a.dtype if a.dtype in (np.float32, np.float64) else np.float64)
    if x.ndim == 2:
        return ndimage.gaussian_filter(x, float(sigma), mode=mode, truncate=truncate)
    return np.stack([ndimage.gaussian_filter(m, float(sigma), mode=mode, truncate=truncate) for m in x])


def gaussian_filter_mm(a: np.ndarray, sigma: float, mode: str = "reflect", truncate: float = 4.0) -> np.ndarray:
    """``ndimage.gaussian_filter(a, sigma, mode=mode, truncate=truncate)`` of a 2D float array, or of
    each map of a (S, h, w) stack, to float rounding, as products with the banded matrices of
    :func:`gaussian_matrix` (float64; no per-call kernel set-up, and one product serves a whole
    stack): on the small maps of the vacuum check and the overlayer check several times faster than
    ``ndimage``. Returns ``a``'s float type (float64 for integers)."""
    a = np.asarray(a)
    dt = a.dtype if a.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    x = np.asarray(a, np.float64)
    stack = x.reshape((-1,) + x.shape[-2:])
    s, h, w = stack.shape
    if h * h * w <= GEMM_MAX_MNK and w * w * h <= GEMM_MAX_MNK:      # small maps: two dense products
        out = np.matmul(np.matmul(gaussian_matrix(h, float(sigma), truncate, mode), stack),
                        gaussian_matrix(w, float(sigma), truncate, mode).T)
        return out.astype(dt).reshape(a.shape)
    rows = stack[0] if s == 1 else stack.transpose(1, 0, 2).reshape(h, s * w)      # (h, s w)
    rows = _band_product(rows, sigma, truncate, mode)                                # along axis 0
    cols = _band_product(np.ascontiguousarray(rows.reshape(h * s, w).T), sigma, truncate, mode)   # (w, h s)
    out = cols.T.reshape(h, s, w)
    out = out[:, 0] if s == 1 else out.transpose(1, 0, 2)
    return out.astype(dt).reshape(a.shape)


def gaussian_smooth(a: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``ndimage.gaussian_filter(a, sigma, truncate=truncate)`` of a 2D float array (mode
    "reflect"), to float rounding (:func:`gaussian_filter`). Returns ``a``'s float type."""
    return gaussian_filter(a, sigma, "reflect", truncate)
