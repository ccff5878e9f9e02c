"""Dopant statistics during a live session (``stemwatch serve`` and the dashboard's statistics tab).

:class:`LiveStats` is fed by the live service's analysis thread (:meth:`add`, cheap: the dopants
of one frame, vectorised) and read from other threads (:meth:`stats`, :meth:`write`,
:meth:`save_folder`). Besides the observations it keeps, as plain data, what a report needs later:
the series' acquisition metadata, the before/after crops of the first ``max_gallery`` events (from
a short ring of recent frames, cut by :mod:`engine.gallery`; needs the pipeline's ``keep_image``)
and the newest frame with the most dopants. :meth:`save_folder` writes an analyze-style folder (frames.csv, dopants.csv,
events.jsonl, summary.json, stats.json, transitions.csv, gallery.npz, representative.npz) that
:func:`dashboard.report.build_report` turns into the session report.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

from engine import stats as S
from engine.types import FrameResult


class LiveStats:
    """Thread-safe accumulation of the dopant statistics of the current series.

    dose_e_per_A2 : dose per frame given by the operator (``--dose``); else from each series' metadata.
    """

    def __init__(self, dose_e_per_A2: float | None = None, max_gallery: int = 24, ring_frames: int = 4,
                 max_frames: int = 200_000):
        self._lock = threading.Lock()
        self.dose_override = dose_e_per_A2
        self.max_gallery = int(max_gallery)
        self.max_events = 100_000
        self._ring: collections.deque = collections.deque(maxlen=max(2, int(ring_frames)))
        self._acc = S.StatsAccumulator(max_frames=max_frames)
        self._frames_rows: list = []
        self._events: list = []
        self._gallery: list = []
        self._rep = None
        self._rep_n = -1
        self.acquisition: dict = {}
        self.version = 0

    # ---- analysis thread
    def add(self, r: FrameResult, meta: dict | None = None, usable: bool | None = None) -> None:
        ok = S.usable_frame(r) if usable is None else bool(usable)
        with self._lock:
            if r.series != self._acc.series:
                self._new_series(r, meta)
            self._acc.add(r, usable=ok)
            self._frames_rows.append((int(r.seq), float(r.t_acquired), "" if ok else (r.error or "not usable")))
            if len(self._frames_rows) > self._acc.max_frames:
                del self._frames_rows[: len(self._frames_rows) - self._acc.max_frames]
            snap = self._snapshot(r) if (ok and r.image is not None) else None
            if snap is not None:
                for e in r.events:
                    d = dict(e.to_dict(), series=r.series)
                    if len(self._gallery) < self.max_gallery:
                        item = self._gallery_item(d, snap)
                        if item is not None:
                            self._gallery.append(item)
                n_dop = len(self._acc.last_observations())
                if n_dop >= self._rep_n:
                    self._rep, self._rep_n = snap, n_dop
                self._ring.append(snap)
            self._events += [dict(e.to_dict(), series=r.series) for e in r.events]
            if len(self._events) > self.max_events:
                del self._events[: len(self._events) - self.max_events]
            self.version += 1

    def _new_series(self, r: FrameResult, meta: dict | None) -> None:
        dose, src = S.dose_per_frame(meta, r.pixel_size_A, self.dose_override)
        self._acc.reset()
        self._acc.set_dose(dose, src)
        self._frames_rows, self._events, self._gallery = [], [], []
        self._ring.clear()
        self._rep, self._rep_n = None, -1
        self.acquisition = {"series": r.series, "shape_px": list(r.frame_shape), "pixel_size_A": float(r.pixel_size_A),
                            "pixel_size_source": "stream start message", "meta": dict(meta or {})}

    @staticmethod
    def _snapshot(r: FrameResult):
        from engine.gallery import gallery_frame

        return gallery_frame(r)

    def _gallery_item(self, e: dict, after):
        from engine.gallery import before_frame, gallery_item

        ring = list(self._ring)
        before = before_frame(ring, e, after.series)
        return None if before is None else gallery_item(e, before, after, ring)

    # ---- readers (any thread)
    def stats(self, complete: bool = True, note: str = "live session: statistics so far") -> S.Stats:
        with self._lock:
            obs = self._acc.observations()
            fi = self._acc.frame_info()
            events = [{"kind": e["kind"], "frame": e["frame"]} for e in self._events]
            src = self._acc.dose_source
            run, gap = self._acc.min_run_frames, self._acc.max_gap_frames
        return S.compute_stats(S.build_histories(obs, fi, run), events, gap, src, complete, note)

    def write(self, out_dir) -> S.Stats:
        """stats.json and transitions.csv of the session so far into ``out_dir``."""
        st = self.stats()
        S.write_stats(st, out_dir)
        return st

    def save_folder(self, out_dir, recording: str | None = None) -> Path:
        """An analyze-style folder of the session so far (see the module docstring)."""
        from engine.gallery import save_gallery

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        with self._lock:
            obs = self._acc.observations()
            frames = list(self._frames_rows)
            events = list(self._events)
            gallery = list(self._gallery)
            rep = self._rep
            acq = dict(self.acquisition)
            dose = (self._acc.dose, self._acc.dose_source)
        with open(d / "frames.csv", "w") as fh:
            fh.write("frame,t_acquired,error\n")
            fh.writelines(f"{s},{t:.6f},{str(err).replace(',', ';')}\n" for s, t, err in frames)
        with open(d / "dopants.csv", "w") as fh:
            fh.write(",".join(S.DOPANTS_COLUMNS) + "\n")
            fh.write(S.dopants_csv_rows(obs))
        with open(d / "events.jsonl", "w") as fh:
            fh.writelines(json.dumps(e, default=str) + "\n" for e in events)
        save_gallery(gallery, d / "gallery.npz")
        if rep is not None:
            np.savez_compressed(d / "representative.npz", seq=np.array(rep.seq),
                                image=np.asarray(rep.image, np.float32),
                                xy=rep.xy_A / rep.step_A, species=np.asarray([str(x) for x in rep.species], "U5"))
        summary = {"frames": len(frames), "events": len(events), "input": recording, "live": True,
                   "saved_at_unix_s": time.time(), "acquisition": acq,
                   "dose": {"e_per_A2_per_frame": dose[0], "source": dose[1]}}
        tmp = d / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        os.replace(tmp, d / "summary.json")
        self.write(d)
        return d
