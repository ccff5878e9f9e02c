"""A stand-in network for pipeline tests about which frames go through, not about the network."""

from __future__ import annotations

import numpy as np

from engine.types import Probabilities


class CountingInferencer:
    """Records calls; returns a lattice of 'Si' everywhere it is asked (so any analysed frame would
    produce Si): the test is about what the pipeline lets through, not about the network."""

    def __init__(self):
        self.calls = 0

    def predict(self, image, pixel_size_A):
        self.calls += 1
        h, w = np.shape(image)
        p = np.zeros((3, h, w), np.float32)
        p[0] = 1.0
        yy, xx = np.mgrid[0:h, 0:w]
        spots = ((yy % 20) < 3) & ((xx % 20) < 3)
        p[:, spots] = 0.0
        p[2, spots] = 1.0
        return Probabilities(p, float(pixel_size_A), (h, w), float(pixel_size_A))
