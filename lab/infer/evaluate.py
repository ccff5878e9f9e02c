"""Accuracy of the network with the simplest atom finder (threshold + centre of mass).

This is the model-level metric of the inference issue (criterion 7), deliberately independent of
the chemistry stage's better finder:

* atom sites: connected components (8-connected) of ``P(background) < 0.5``;
* position: centre of mass of ``1 - P(background)`` over the component, mapped to frame pixels;
* class: C or Si, whichever has the larger summed probability over the component.

Matching: predicted and true atoms are matched one-to-one as mutual nearest neighbours within
``match_radius_A`` (0.5 A, about a third of the C-C bond). Atoms (true or predicted) within
``border_A`` of the frame edge are left out of the counts, because half-visible atoms are
ambiguous for any finder; so are atoms within ``IGNORE_RADIUS_A`` of amorphous contamination
(overlapping atoms in projection, not resolvable; the network is not trained there either). True atoms of the "other" (heavier-than-Si) species are a separate
category: the network labels them in its Si ("heavy") channel, so a Si prediction on one counts as
a correct heavy detection (``heavy_recall``) and is excluded from Si precision/recall.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from engine.types import OTHER, SI, Probabilities
from lab.match import match_mutual
from lab.radii import ATOM_MATCH_RADIUS_A, CONTAMINATION_IGNORE_A

MATCH_RADIUS_A = ATOM_MATCH_RADIUS_A
BORDER_A = 1.0
IGNORE_RADIUS_A = CONTAMINATION_IGNORE_A


def find_atoms_simple(probs: Probabilities, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Threshold + centre of mass. Returns ``(xy_px (N,2) in frame pixels, species (N,) 0=C 1=Si)``."""
    p = probs.p
    atom = 1.0 - p[0]
    mask = atom > threshold
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int8)
    idx = np.arange(1, n + 1)
    com = np.asarray(ndimage.center_of_mass(atom, lab, idx), dtype=np.float64).reshape(-1, 2)  # (row, col)
    sc = ndimage.sum_labels(p[1], lab, idx)
    ssi = ndimage.sum_labels(p[2], lab, idx)
    xy_grid = com[:, ::-1]
    return probs.to_frame_px(xy_grid), (ssi > sc).astype(np.int8)


@dataclass
class Counts:
    """Detection and species counts accumulated over frames."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    si_tp: int = 0
    si_fp: int = 0
    si_fn: int = 0
    heavy_true: int = 0
    heavy_found: int = 0
    sq_err_A2: float = 0.0
    frames: int = 0
    extra: dict = field(default_factory=dict)

    def add(self, other: "Counts") -> None:
        for k in ("tp", "fp", "fn", "si_tp", "si_fp", "si_fn", "heavy_true", "heavy_found", "frames"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.sq_err_A2 += other.sq_err_A2

    @staticmethod
    def _ratio(a, b):
        return a / b if b else float("nan")

    @property
    def precision(self):
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self):
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self):
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def si_precision(self):
        return self._ratio(self.si_tp, self.si_tp + self.si_fp)

    @property
    def si_recall(self):
        return self._ratio(self.si_tp, self.si_tp + self.si_fn)

    @property
    def heavy_recall(self):
        return self._ratio(self.heavy_found, self.heavy_true)

    @property
    def rmse_A(self):
        return float(np.sqrt(self.sq_err_A2 / self.tp)) if self.tp else float("nan")

    def summary(self) -> dict:
        return {"frames": self.frames, "atoms": self.tp + self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1, "si": self.si_tp + self.si_fn,
                "si_precision": self.si_precision, "si_recall": self.si_recall,
                "heavy": self.heavy_true, "heavy_recall": self.heavy_recall, "rmse_A": self.rmse_A}


def score_frame(pred_xy_px: np.ndarray, pred_species: np.ndarray, true_xy_px: np.ndarray, true_species: np.ndarray,
                frame_shape: tuple[int, int], pixel_size_A: float, match_radius_A: float = MATCH_RADIUS_A,
                border_A: float = BORDER_A, ignore_xy_px: np.ndarray | None = None,
                ignore_radius_A: float = IGNORE_RADIUS_A) -> Counts:
    """Counts for one frame; positions in frame pixels (x=col, y=row); species codes of ``SPECIES``.

    Atoms (true or predicted) within ``ignore_radius_A`` of any ``ignore_xy_px`` point (amorphous
    contamination) are not counted, like border atoms."""
    H, W = frame_shape
    b = border_A / pixel_size_A
    ign = None
    if ignore_xy_px is not None and len(ignore_xy_px):
        ign = cKDTree(np.asarray(ignore_xy_px, np.float64).reshape(-1, 2) * pixel_size_A)

    def inside(xy):
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        ok = (xy[:, 0] >= b - 0.5) & (xy[:, 0] <= W - 0.5 - b) & (xy[:, 1] >= b - 0.5) & (xy[:, 1] <= H - 0.5 - b)
        if ign is not None and len(xy):
            d, _ = ign.query(xy * pixel_size_A, distance_upper_bound=ignore_radius_A)
            ok &= ~np.isfinite(d)
        return ok

    pred_xy = np.asarray(pred_xy_px, np.float64).reshape(-1, 2)
    true_xy = np.asarray(true_xy_px, np.float64).reshape(-1, 2)
    pred_sp = np.asarray(pred_species).reshape(-1)
    true_sp = np.asarray(true_species).reshape(-1)
    # match with all atoms (so a border atom can absorb a prediction just inside), count only inside
    ip, it = match_mutual(pred_xy * pixel_size_A, true_xy * pixel_size_A, match_radius_A)
    pin, tin = inside(pred_xy), inside(true_xy)
    matched_p = np.zeros(len(pred_xy), bool)
    matched_p[ip] = True
    matched_t = np.zeros(len(true_xy), bool)
    matched_t[it] = True
    c = Counts(frames=1)
    pair_in = tin[it] | pin[ip]
    c.tp = int(pair_in.sum())
    c.fp = int((pin & ~matched_p).sum())
    c.fn = int((tin & ~matched_t).sum())
    d = (pred_xy[ip] - true_xy[it]) * pixel_size_A
    c.sq_err_A2 = float((d[pair_in] ** 2).sum())
    # species
    t_match_sp = np.full(len(true_xy), -1)
    t_match_sp[it] = pred_sp[ip]
    p_match_sp = np.full(len(pred_xy), -1)
    p_match_sp[ip] = true_sp[it]
    true_si = tin & (true_sp == SI)
    c.si_tp = int((true_si & (t_match_sp == SI)).sum())
    c.si_fn = int((true_si & (t_match_sp != SI)).sum())
    pred_si = pin & (pred_sp == SI) & (p_match_sp != OTHER)
    c.si_fp = int((pred_si & (p_match_sp != SI)).sum())
    heavy = tin & (true_sp == OTHER)
    c.heavy_true = int(heavy.sum())
    c.heavy_found = int((heavy & (t_match_sp == SI)).sum())
    return c
