"""Columnar storage of live tracks (struct of arrays), with append and compaction.

One row per live track. Columns are numpy arrays; rings are (T, H) raw observation buffers
(see :mod:`engine.track.debounce`). Positions are *world* angstrom: drift-corrected coordinates
(``frame_A = world_A + offset_A + shear * world_y``, see :class:`engine.track.tracker.Tracker`).
"""

from __future__ import annotations

import numpy as np

from engine.track.debounce import UNKNOWN

#: column name -> (dtype, per-row shape, fill value for new rows when not given)
SCALARS: dict[str, tuple] = {
    "id": (np.int64, (), -1),
    "pos": (np.float64, (2,), 0.0),        # world A, Kalman state
    "P": (np.float64, (), 0.0),            # isotropic position variance, A^2
    "anchor": (np.float64, (2,), 0.0),     # world A, the debounced lattice site (hop detection)
    "last_px": (np.float64, (2,), 0.0),    # last measured position, input-frame px (x, y)
    "conf": (np.float32, (), 0.0),         # last detection confidence
    "last_sp": (np.int16, (), UNKNOWN),    # last observed species code
    "heavy_nb": (np.int8, (), 0),          # heavy atoms (Si, other) it was last seen bonded to
    "born_seq": (np.int64, (), -1),
    "last_seq": (np.int64, (), -1),
    "last_event_seq": (np.int64, (), -(1 << 40)),
    "last_hop_seq": (np.int64, (), -(1 << 40)),
    "hits": (np.int32, (), 0),
    "misses": (np.int32, (), 0),
    "confirmed": (np.bool_, (), False),
    "initial": (np.bool_, (), False),      # born in the first frame of the series
    "edge_born": (np.bool_, (), False),    # born near the field edge (entered the field)
    "sp_state": (np.int16, (), UNKNOWN),   # debounced species (C, or the majority Si/other of a heavy track)
    "cls_state": (np.int16, (), UNKNOWN),  # debounced class: 0 C, 1 heavy (Si or other)
    "coord_state": (np.int16, (), UNKNOWN),  # debounced C-neighbour count (heavy atoms)
    "dimer_state": (np.int16, (), UNKNOWN),  # debounced "bonded to another heavy atom"
    "formula_state": (np.int16, (), UNKNOWN),  # debounced defect-formula code
    "present_state": (np.int16, (), 1),
    "miss_edge_A": (np.float32, (), np.inf),  # nearest the field edge it was predicted while unseen (A)
    "weak_used": (np.bool_, (), False),    # an unsure detection already counted as a miss in this run
}
#: raw observation rings: name -> dtype. Stored as (H, capacity) so that writing one frame's column
#: for all tracks is contiguous; :meth:`TrackStore.ring` returns the (T, H) transposed view.
RINGS: dict[str, type] = {"sp": np.int8, "cls": np.int8, "coord": np.int8, "present": np.int8, "away": np.int8,
                          "dimer": np.int8, "formula": np.int16, "ncoord": np.int8}


class TrackStore:
    """Struct-of-arrays table of tracks; ``len(store)`` live rows, capacity grows by doubling."""

    def __init__(self, ring_len: int, capacity: int = 1024):
        self.H = int(ring_len)
        self.n = 0
        self._cap = 0
        self.cols: dict[str, np.ndarray] = {}
        self._alloc(capacity)

    def _alloc(self, cap: int) -> None:
        new = {}
        for name, (dt, shp, fill) in SCALARS.items():
            a = np.full((cap, *shp), fill, dtype=dt)
            if name in self.cols:
                a[: self.n] = self.cols[name][: self.n]
            new[name] = a
        for name, dt in RINGS.items():
            a = np.full((self.H, cap), UNKNOWN, dtype=dt)
            key = "ring_" + name
            if key in self.cols:
                a[:, : self.n] = self.cols[key][:, : self.n]
            new[key] = a
        self.cols, self._cap = new, cap

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name: str) -> np.ndarray:
        cols = self.__dict__.get("cols")
        if cols is not None and name in cols:
            return cols[name][: self.__dict__["n"]]
        raise AttributeError(name)

    def ring(self, name: str) -> np.ndarray:
        """(T, H) view of a raw-observation ring (writable)."""
        return self.cols["ring_" + name][:, : self.n].T

    def append(self, count: int, **values) -> slice:
        """Add ``count`` rows; ``values`` are column arrays (or scalars) for them. Returns their slice."""
        if count <= 0:
            return slice(self.n, self.n)
        need = self.n + count
        if need > self._cap:
            cap = max(need, 2 * self._cap)
            self._alloc(cap)
        sl = slice(self.n, need)
        for name, (dt, shp, fill) in SCALARS.items():
            self.cols[name][sl] = values.pop(name) if name in values else fill
        for name in RINGS:
            self.cols["ring_" + name][:, sl] = UNKNOWN
        if values:
            raise KeyError(f"unknown track columns {sorted(values)}")
        self.n = need
        return sl

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where ``mask`` (len(self),) is True. Row order is NOT preserved: the
        holes are filled with live rows from the end, so the cost is proportional to the number of
        removed rows, not to the table size."""
        mask = np.asarray(mask, bool)
        m = int(mask.sum())
        if m == self.n:
            return
        holes = np.flatnonzero(~mask[:m])
        tail = m + np.flatnonzero(mask[m:])
        if len(holes):
            for name, a in self.cols.items():
                if name.startswith("ring_"):
                    a[:, holes] = a[:, tail]
                else:
                    a[holes] = a[tail]
        self.n = m

    def take(self, rows: np.ndarray) -> dict:
        """Copies of every column (rings included) for ``rows``: a dict for :meth:`put`."""
        rows = np.asarray(rows, np.int64)
        out = {name: self.cols[name][: self.n][rows].copy() for name in SCALARS}
        for name in RINGS:
            out["ring_" + name] = self.cols["ring_" + name][:, : self.n][:, rows].copy()
        return out

    def put(self, rows: dict, reset_rings: bool = False) -> slice:
        """Append rows taken with :meth:`take` (optionally with their rings cleared)."""
        count = len(rows["id"])
        sl = self.append(count, **{name: rows[name] for name in SCALARS})
        if not reset_rings:
            for name in RINGS:
                self.cols["ring_" + name][:, sl] = rows["ring_" + name]
        return sl

    def clear(self) -> None:
        self.n = 0
