"""The frame-level maps of the raw-frame checks, made once per frame and shared (issue 20).

:func:`contrast_maps` gives the frame block-averaged to about 0.2 A/px and smoothed, and its local
background; the atom finder's contrast check (:func:`engine.chem.atoms.intensity_ratio`), the vacuum
check (:mod:`engine.chem.vacuum`), the overlayer check (:func:`engine.chem.atoms.local_excess`) and
the SNR estimate (:func:`engine.health.atoms.estimate_snr`) all read them. The returned
:class:`ContrastMaps` is the 4-tuple ``(sm, bg, pxd, f)`` and also keeps what those checks would
otherwise each compute again from the same frame: coarser block means of ``sm``
(:meth:`ContrastMaps.coarse`) and the frame's pixel noise (:meth:`ContrastMaps.noise_sigma`).
"""

from __future__ import annotations

import numpy as np

from engine.chem.filters import binomial5, block_mean, shift_max
from engine.chem.noise import central_noise_sigma

#: positions are computed on a grid no finer than this (finer maps are block-averaged first)
WORK_PIXEL_A = 0.2


class ContrastMaps(tuple):
    """``(sm, bg, pxd, f)`` (see :func:`contrast_maps`), with per-frame results computed on first use.

    ``image``: the frame the maps were made from (the noise is measured on it); ``block``: that frame
    block-averaged by ``f``, before the smoothing (the column shapes at ``pxd``; None when not kept)."""

    def __new__(cls, sm, bg, pxd, f, image=None, block=None):
        self = super().__new__(cls, (sm, bg, pxd, f))
        self.image = image
        self.block = block
        self._cache = {}
        return self

    def coarse(self, k: int) -> np.ndarray:
        """``block_mean(sm, k)`` (``sm`` itself for k <= 1), computed once per ``k`` (read-only)."""
        if k <= 1:
            return self[0]
        key = ("coarse", int(k))
        if key not in self._cache:
            m = block_mean(self[0], int(k))
            m.setflags(write=False)                    # shared by the checks: read-only
            self._cache[key] = m
        return self._cache[key]

    def noise_sigma(self) -> float:
        """:func:`engine.chem.noise.central_noise_sigma` of the frame, computed once."""
        if "noise" not in self._cache:
            self._cache["noise"] = central_noise_sigma(self.image)
        return self._cache["noise"]


def coarse(maps: tuple, k: int) -> np.ndarray:
    """``block_mean(maps[0], k)``: shared when ``maps`` is a :class:`ContrastMaps`."""
    if isinstance(maps, ContrastMaps):
        return maps.coarse(k)
    return block_mean(maps[0], k) if k > 1 else maps[0]


def noise_of(maps, image: np.ndarray) -> float:
    """:func:`engine.chem.noise.central_noise_sigma` of ``image``: shared when ``maps`` is the
    :class:`ContrastMaps` of that very array."""
    if isinstance(maps, ContrastMaps) and maps.image is image:
        return maps.noise_sigma()
    return central_noise_sigma(image)


def contrast_maps(image: np.ndarray, pixel_size_A: float) -> ContrastMaps:
    """Frame-level maps for the raw-frame contrast checks, computed once per frame:
    ``(sm, bg, pxd, f)``: the frame block-averaged by ``f`` to about 0.2 A/px (``pxd``) and smoothed by
    a 5x5 binomial (sigma 1 px), and its local background (minimum within 3 A: the hexagon hollows, or
    vacuum in a hole), smoothed the same way."""
    image = np.asarray(image)
    f = max(1, int(WORK_PIXEL_A / pixel_size_A + 1e-6))
    img = block_mean(image, f) if f > 1 else np.asarray(image, np.float32)
    pxd = pixel_size_A * f
    sm = binomial5(img)
    size = max(3, int(round(3.0 / pxd)) | 1)
    bg = binomial5(shift_max(shift_max(sm, size, 0, np.minimum), size, 1, np.minimum))
    return ContrastMaps(sm, bg, pxd, f, image, block=img)
