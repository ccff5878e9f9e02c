"""The pixel noise of a raw frame, measured from the frame itself (Immerkaer's method).

Used by the raw-frame checks of :mod:`engine.chem` (the vacuum check) and by the frame's C-atom SNR
estimate (:mod:`engine.health.atoms`, which re-exports it).
"""

from __future__ import annotations

import numpy as np


def noise_sigma(image: np.ndarray) -> float:
    """Pixel noise (counts, 1 sigma) by Immerkaer's method (Laplacian-difference mask, mean |.|)."""
    a = np.asarray(image)
    if np.issubdtype(a.dtype, np.integer) and a.dtype.itemsize <= 2:
        a = a.astype(np.int32)            # 8/16-bit frames: the same Laplacian values, exact, in int32
    else:
        a = np.asarray(a, np.float64)
    if a.dtype == np.float64 and not np.isfinite(a).all():
        a = np.where(np.isfinite(a), a, np.nanmedian(a))
    if a.shape[0] < 3 or a.shape[1] < 3:
        return float("nan")
    # the mask [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] is the outer product of [1, -2, 1] with itself:
    # a second difference along rows, then along columns (exact on integers; 8 array passes, not 17)
    t = a[:-2] + a[2:]
    t -= 2 * a[1:-1]
    lap = t[:, :-2] + t[:, 2:]
    lap -= 2 * t[:, 1:-1]
    np.abs(lap, out=lap)
    return float(np.sqrt(np.pi / 2.0) * np.mean(lap) / 6.0)


def central_noise_sigma(image: np.ndarray) -> float:
    """:func:`noise_sigma` of the frame's central 192 x 192 pixels (the whole frame when smaller): the
    noise the vacuum check and the SNR estimate use."""
    img = np.asarray(image)
    H, W = img.shape
    return noise_sigma(img[max(0, H // 2 - 96):H // 2 + 96, max(0, W // 2 - 96):W // 2 + 96])
