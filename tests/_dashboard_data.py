"""Plain-data FrameResults for the dashboard tests: a graphene lattice with Si dopants.

Nothing here is a mock: real :mod:`engine.types` records built from a honeycomb lattice (C-C
1.42 A), bonds from a KD-tree (cutoff 1.75 A), Si defects with their first shell, a rendered
Z-contrast image (Gaussian atoms, Si brighter, Poisson-like noise), stable track ids, and
events that the test scripts.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from engine.types import SI, Atoms, Chemistry, Defect, Event, FrameResult

CC_A = 1.42


def honeycomb(width_A: float, height_A: float, margin_A: float = 0.8) -> np.ndarray:
    """(N, 2) graphene C positions in angstrom covering [margin, size - margin]."""
    a = CC_A * np.sqrt(3.0)
    a1 = np.array([a, 0.0])
    a2 = np.array([a / 2.0, a * np.sqrt(3.0) / 2.0])
    basis = np.array([[0.0, 0.0], [a / 2.0, CC_A / 2.0]])
    n = int(max(width_A, height_A) / a) + 4
    i, j = np.meshgrid(np.arange(-n, 2 * n), np.arange(-2, n + 2), indexing="ij")
    cells = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    pts = (cells[:, None, :] + basis[None]).reshape(-1, 2)
    keep = ((pts[:, 0] > margin_A) & (pts[:, 0] < width_A - margin_A)
            & (pts[:, 1] > margin_A) & (pts[:, 1] < height_A - margin_A))
    return pts[keep]


class Lattice:
    """A fixed lattice whose dopants can switch between 3- and 4-fold; makes one FrameResult per call.

    shape : (H, W) frame pixels; pixel_size_A : angstrom per pixel; n_si : dopants placed away
    from the edges. ``four_fold`` is the set of dopant numbers (0..n_si-1) currently 4-fold.
    """

    def __init__(self, shape=(256, 256), pixel_size_A=0.1, n_si=3, seed=0, series="test-series"):
        self.shape = shape
        self.p = pixel_size_A
        H, W = shape
        self.xy_A = honeycomb(W * pixel_size_A, H * pixel_size_A)
        rng = np.random.default_rng(seed)
        self.rng = rng
        centre = np.array([W, H]) * pixel_size_A / 2
        inner = np.flatnonzero(np.linalg.norm(self.xy_A - centre, axis=1) < 0.35 * min(H, W) * pixel_size_A)
        self.si = rng.choice(inner, size=n_si, replace=False)
        self.species = np.zeros(len(self.xy_A), np.int8)
        self.species[self.si] = SI
        self.track_ids = np.arange(len(self.xy_A), dtype=np.int64) + 100
        self.four_fold: set[int] = set()
        self.series = series
        tree = cKDTree(self.xy_A)
        self.bonds = np.array(sorted(tree.query_pairs(1.75)), dtype=np.int32).reshape(-1, 2)
        self.tree = tree
        self._last_drift_A = np.zeros(2)

    def si_track(self, k: int) -> int:
        return int(self.track_ids[self.si[k]])

    def si_xy_A(self, k: int) -> tuple[float, float]:
        x, y = self.xy_A[self.si[k]]
        return float(x), float(y)

    def result(self, seq: int, events=(), drift_A=(0.0, 0.0), t_acquired: float | None = None,
               image: bool = True) -> FrameResult:
        xy_A = self.xy_A + np.asarray(drift_A)
        n = len(xy_A)
        bonds = self.bonds
        extra = []
        for k in sorted(self.four_fold):
            i = int(self.si[k])
            d, nb = self.tree.query(self.xy_A[i], k=5)
            bonded = set(bonds[bonds[:, 0] == i, 1]) | set(bonds[bonds[:, 1] == i, 0])
            j = next(int(b) for b in nb[1:] if int(b) not in bonded)
            extra.append(sorted((i, j)))
        if extra:
            bonds = np.vstack([bonds, np.array(extra, np.int32)])
        coord = np.bincount(bonds.ravel(), minlength=n).astype(np.int16)
        defects, atom_defect = [], np.full(n, -1, np.int32)
        for k, i in enumerate(self.si):
            nbrs = np.concatenate([bonds[bonds[:, 0] == i, 1], bonds[bonds[:, 1] == i, 0]])
            members = np.concatenate([[i], nbrs]).astype(np.int64)
            fold = int(coord[i])
            defects.append(Defect(kind=f"Si-{fold}fold", formula=f"Si1C{len(nbrs)}", members=members,
                                  centre_px=(float(xy_A[i, 0] / self.p), float(xy_A[i, 1] / self.p)),
                                  signature=f"sig{fold}", motif=f"Si {fold}-fold"))
            atom_defect[members] = len(defects) - 1
        d = np.linalg.norm(xy_A[bonds[:, 0]] - xy_A[bonds[:, 1]], axis=1)
        atoms = Atoms(xy_px=xy_A / self.p, species=self.species.copy(),
                      confidence=np.full(n, 0.95, np.float32),
                      class_prob=np.tile(np.array([0.02, 0.95, 0.03], np.float32), (n, 1)),
                      border=self._border(xy_A), pixel_size_A=self.p)
        chem = Chemistry(atoms=atoms, bonds=bonds, bond_length_A=d, coordination=coord, defects=defects,
                         atom_defect=atom_defect)
        step_px = (np.asarray(drift_A, float) - self._last_drift_A) / self.p   # shift vs the previous frame
        self._last_drift_A = np.asarray(drift_A, float)
        t_acq = time.time() if t_acquired is None else t_acquired
        img = self.render(xy_A / self.p, seq) if image else None
        return FrameResult(series=self.series, seq=seq, t_acquired=t_acq, pixel_size_A=self.p,
                           frame_shape=self.shape, chemistry=chem, track_ids=self.track_ids.copy(),
                           events=list(events), drift_px=(float(step_px[0]), float(step_px[1])),
                           timings_s={"infer": 0.02, "chem": 0.004, "track": 0.002}, t_done=time.time(),
                           image=img)

    def _border(self, xy_A: np.ndarray, border_A: float = 1.5) -> np.ndarray:
        H, W = self.shape
        size = np.array([W, H]) * self.p
        return np.any((xy_A < border_A) | (xy_A > size - border_A), axis=1)

    def render(self, xy_px: np.ndarray, seq: int) -> np.ndarray:
        H, W = self.shape
        img = np.zeros((H, W), np.float32)
        ij = np.round(xy_px).astype(int)
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < W) & (ij[:, 1] >= 0) & (ij[:, 1] < H)
        weight = np.where(self.species == SI, 3.2, 1.0).astype(np.float32)
        np.add.at(img, (ij[ok, 1], ij[ok, 0]), weight[ok])
        img = ndimage.gaussian_filter(img, sigma=0.45 / self.p) * 40.0
        noise = np.random.default_rng(seq).normal(0.0, 0.04, img.shape).astype(np.float32)
        return (img + noise + 0.1).astype(np.float32)

    def switch(self, k: int, seq: int, t_acquired: float | None = None) -> Event:
        """Make dopant ``k`` 4-fold (or back to 3-fold) and return the matching event."""
        to4 = k not in self.four_fold
        (self.four_fold.add if to4 else self.four_fold.discard)(k)
        x, y = self.si_xy_A(k)
        return Event(frame=seq, t_acquired=time.time() if t_acquired is None else t_acquired, latency_s=0.6,
                     kind="si_3_to_4" if to4 else "si_4_to_3", atom_id=self.si_track(k), x=x / self.p, y=y / self.p,
                     x_A=x, y_A=y, before="3-fold" if to4 else "4-fold", after="4-fold" if to4 else "3-fold",
                     confidence=0.93, first_frame=seq - 2)


def click_row(tab, row: int, seen: dict | None = None) -> None:
    """What a page sends when the operator clicks row ``row`` of the event table it shows.

    ``seen``: the table data the page had at the click (default: the server's current data; a page
    can lag the server by an update). Bokeh's DataTable sets the selection's indices (an index into
    the page's rows), then the page's CustomJS (``dashboard.app.PICK_JS``) sends that row's event key
    on the ``event_pick`` model, unless it is the event the server already has selected (a page
    without that model sends the indices only)."""
    seen = tab.event_source.data if seen is None else seen
    tab.event_source.selected.indices = [row]
    pick = tab.doc.get_model_by_name("event_pick")
    if pick is not None and seen["key"][row] != pick.data["key"][0]:
        pick.tags = [seen["key"][row], (pick.tags[1] if pick.tags else 0) + 1]
