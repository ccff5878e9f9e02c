"""Optional 2-D Gaussian refinement of atom positions on the raw frame (``chemistry.refine_gaussian``):
a Gaussian plus a plane fitted by Gauss-Newton in a small window around each atom, all atoms of a
batch at once. Split out of :mod:`engine.chem.atoms`, which calls it from ``find_atoms``."""

from __future__ import annotations

import numpy as np


def _gauss_plane_fit(img: np.ndarray, xy_px: np.ndarray, pixel_size_A: float, k: int, iterations: int,
                     plane: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch of fits on windows of half-size ``k`` px centred at ``rint(xy_px)``: (xy, A, s)."""
    n = len(xy_px)
    H, W = img.shape
    d = np.arange(-k, k + 1)
    x0 = np.rint(xy_px[:, 0]).astype(np.int64)
    y0 = np.rint(xy_px[:, 1]).astype(np.int64)
    cols = x0[:, None, None] + d[None, None, :]
    rows = y0[:, None, None] + d[None, :, None]
    ok = ((rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)).reshape(n, -1).astype(np.float64)
    vals = img[np.clip(rows, 0, H - 1), np.clip(cols, 0, W - 1)].reshape(n, -1)
    X = np.broadcast_to(cols, (n, 2 * k + 1, 2 * k + 1)).reshape(n, -1).astype(np.float64)
    Y = np.broadcast_to(rows, (n, 2 * k + 1, 2 * k + 1)).reshape(n, -1).astype(np.float64)
    DX = X - x0[:, None]
    DY = Y - y0[:, None]
    lo = np.where(ok > 0, vals, np.inf).min(1)
    hi = np.where(ok > 0, vals, -np.inf).max(1)
    b = np.where(np.isfinite(lo), lo, 0.0)
    bx = np.zeros(n)
    by = np.zeros(n)
    A = np.where(np.isfinite(hi), hi - b, 1.0)
    cx = xy_px[:, 0].astype(np.float64).copy()
    cy = xy_px[:, 1].astype(np.float64).copy()
    s = np.full(n, 0.35 / pixel_size_A)
    eye = np.eye(7)[None]
    for _ in range(iterations):
        dx = X - cx[:, None]
        dy = Y - cy[:, None]
        r2 = dx * dx + dy * dy
        s2 = (s * s)[:, None]
        g = np.exp(-r2 / (2 * s2))
        Ag = A[:, None] * g
        res = (vals - (b[:, None] + bx[:, None] * DX + by[:, None] * DY + Ag)) * ok
        J = np.stack([np.ones_like(g), DX, DY, g, Ag * dx / s2, Ag * dy / s2, Ag * r2 / (s2 * s[:, None])], -1)
        J *= ok[..., None]
        if not plane:
            J[..., 1:3] = 0.0
        JtJ = np.einsum("nki,nkj->nij", J, J)
        Jtr = np.einsum("nki,nk->ni", J, res)
        JtJ = JtJ + 1e-3 * eye * (np.trace(JtJ, axis1=1, axis2=2)[:, None, None] / 7 + 1e-12)
        try:
            step = np.linalg.solve(JtJ, Jtr[..., None])[..., 0]
        except np.linalg.LinAlgError:
            break
        step = np.where(np.isfinite(step), step, 0.0)
        b += step[:, 0]
        bx += step[:, 1]
        by += step[:, 2]
        A += step[:, 3]
        cx += np.clip(step[:, 4], -k / 2, k / 2)
        cy += np.clip(step[:, 5], -k / 2, k / 2)
        s = np.clip(s + step[:, 6], 0.05 / pixel_size_A, 2.0 / pixel_size_A)
    return np.stack([cx, cy], 1), A, s


def refine_gaussian(image: np.ndarray, xy_px: np.ndarray, pixel_size_A: float, window_A: float = 0.6,
                    iterations: int = 8, rounds: int = 3, max_shift_A: float = 0.35, plane: bool = False
                    ) -> np.ndarray:
    """Refine (N, 2) positions by 2D Gaussian fits on the raw frame, all atoms at once.

    Model ``b + A exp(-|r - r0|^2 / (2 s^2))`` (``plane=True`` adds a tilted background
    ``bx dx + by dy``) on a square window of half-size ``window_A``; ``iterations`` damped
    Gauss-Newton steps solved as a batch of small linear systems, repeated for ``rounds`` with the
    window re-centred on the last estimate. A fit that fails (not finite, ``A <= 0``, ``s`` outside
    0.1-1.5 A, or a shift over ``max_shift_A``) keeps the input position. Measured on a simulated
    lattice (probe sigma 0.4 A, 0.05 A/px, Poisson noise): 0.15 A start error -> 0.009 A without the
    plane, 0.03-0.04 A with it (in a symmetric lattice the neighbours' tails cancel; the plane
    trades off against the Gaussian), hence the default. An isolated asymmetric neighbour still
    pulls a one-atom fit by a few hundredths of an angstrom. Returns a new (N, 2) array in frame px.
    """
    img = np.asarray(image, np.float64)
    xy0 = np.asarray(xy_px, np.float64)
    if len(xy0) == 0:
        return xy0.copy()
    k = max(2, int(np.ceil(window_A / pixel_size_A)))
    cur = xy0.copy()
    for _ in range(max(1, rounds)):
        xy, A, s = _gauss_plane_fit(img, cur, pixel_size_A, k, iterations, plane)
        shift = np.hypot(*(xy - xy0).T) * pixel_size_A
        good = (np.isfinite(xy).all(1) & (A > 0) & (shift <= max_shift_A)
                & (s * pixel_size_A >= 0.1) & (s * pixel_size_A <= 1.5))
        cur = np.where(good[:, None], xy, xy0)
    return cur
