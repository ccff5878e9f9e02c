"""INT8 where its answer is FP32's; FP32 where a map is marginal (issue 20, criterion 1).

The INT8 network's probabilities differ from the FP32 reference's by a few hundredths per pixel
(up to ~0.35 at single pixels). That changes no atom where the maps are decided, but it flips
sites that sit near a decision: at 1e3 e/A^2, where most of the map is undecided, detection F1
moved by up to 0.005 and a Si was lost; at 1e4 a Si whose site was 0.18 from an even share was lost; on a
real grain-boundary frame an edge atom changed. :class:`Int8WithFallback` runs the INT8 backend
and, when its output is *marginal*, runs the FP32 reference on the same input and returns that:

* **undecided map**: among the pixels with P(atom) > 0.2 (or P(Si) > 0.2), more than
  :data:`UNDECIDED_MAX` lie below 0.8 (a low-dose or unresolvable field; high-dose frames stay at
  0.22-0.56 on the held-out sets), or
* **marginal Si site**: at an atom site (a 5x5 local maximum of P(atom) above 0.5), the Si share
  P(Si) / (P(C) + P(Si)) lies within :data:`SI_MARGIN` of 0.5.

Both are read from the INT8 maps alone (a few vectorised passes, ~0.2 ms on a 256x256 grid). The
thresholds were chosen on two development seeds of the held-out generator (31337, 55555: at a Si
margin of 0.2 a 1e3 frame of the second kept a Si flip) and checked once on a fresh one (77777) and
on the held-out table (90417): every cell within 0.0005 of FP32. They send 22-39 of 24-40 frames at
1e3 e/A^2, 6-17 of 24-40 at 1e4 and 0-5 of 24-40 at 1e5-1e6 to FP32 (a frame with more sites is
more likely to hold one marginal site); the bench movies, none. ``fallbacks`` / ``runs`` count them
(docs/model.md, "INT8 on the CPU").
"""

from __future__ import annotations

import numpy as np

#: an INT8 map is undecided when more than this fraction of its likely pixels lie in (0.2, 0.8)
UNDECIDED_MAX = 0.6
#: a Si share within this of 0.5 at an atom site is marginal
SI_MARGIN = 0.3
#: the band of probabilities counted as undecided
BAND = (0.2, 0.8)


def undecided_fraction(p: np.ndarray) -> float:
    """The larger of: the fraction of pixels with P(atom) = 1 - P(background) above 0.2 that lie
    below 0.8, and the same for P(Si). ``p``: (3, h, w) in engine.types.CLASSES order. 0 where no
    pixel is above 0.2."""
    lo, hi = BAND
    out = 0.0
    for q in (1.0 - p[0], p[2]):
        likely = q > lo
        n = int(np.count_nonzero(likely))
        if n:
            out = max(out, int(np.count_nonzero(likely & (q < hi))) / n)
    return out


def marginal_si_sites(p: np.ndarray, margin: float = SI_MARGIN) -> int:
    """Atom sites (5x5 local maxima of P(atom) above 0.5) whose Si share P(Si) / (P(C) + P(Si)) lies
    within ``margin`` of 0.5. Only the pixels with such a share are tested for being a maximum (few:
    the rest of the frame costs one comparison per pixel)."""
    atom = 1.0 - p[0]
    c, si = p[1], p[2]
    # |si / (c + si) - 0.5| < margin, without the division
    ys, xs = np.nonzero((atom > 0.5) & (np.abs(si - c) < 2.0 * margin * (c + si)))
    if ys.size == 0:
        return 0
    padded = np.pad(atom, 2, constant_values=-1.0)          # outside the grid never wins
    around = np.stack([padded[ys + dy, xs + dx] for dy in range(5) for dx in range(5)])
    return int(np.count_nonzero(atom[ys, xs] >= around.max(axis=0)))


def marginal(p: np.ndarray) -> bool:
    """Whether an INT8 output ``p`` (3, h, w) is marginal: undecided, or with a marginal Si site."""
    return undecided_fraction(p) > UNDECIDED_MAX or marginal_si_sites(p) > 0


class Int8WithFallback:
    """A backend: ``int8.run(x)``, or ``fp32.run(x)`` when the INT8 output is :func:`marginal`.

    ``int8`` and ``fp32`` are backends on the same model (the INT8 file and the FP32 reference it
    was quantised from); the FP32 one is made on the first marginal input by ``make_fp32()`` and
    kept. Other attributes (threads, model_path, ...) are the INT8 backend's."""

    def __init__(self, int8, make_fp32):
        self.int8 = int8
        self._make_fp32 = make_fp32
        self.fp32 = None
        self.runs = 0
        self.fallbacks = 0
        self.last_fell_back = False
        self.description = f"{int8.description}; FP32 for marginal maps"

    def __getattr__(self, name):               # name, precision, threads, model_path, ... of the INT8 one
        if name in ("int8", "fp32", "_make_fp32"):
            raise AttributeError(name)
        return getattr(self.int8, name)

    def run(self, x: np.ndarray) -> np.ndarray:
        y = self.int8.run(x)
        self.runs += 1
        self.last_fell_back = marginal(y[0])
        if self.last_fell_back:
            if self.fp32 is None:
                self.fp32 = self._make_fp32()
            self.fallbacks += 1
            y = self.fp32.run(x)
        return y

    def close(self) -> None:
        self.int8.close()
        if self.fp32 is not None:
            self.fp32.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["Int8WithFallback", "marginal", "undecided_fraction", "marginal_si_sites", "UNDECIDED_MAX",
           "SI_MARGIN"]
