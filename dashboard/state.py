"""The dashboard's shared state: a never-blocking mailbox for the analysis thread and the history.

Two sides, two threads:

* :meth:`DashboardHub.publish` runs on the analysis thread. It appends a reference to the result to
  a bounded deque under a lock held for a few microseconds: O(1), no copy, no conversion, no I/O,
  nothing that depends on a browser. When the display side falls behind by more than
  ``history_frames`` results, the oldest pending ones are dropped (counted in ``coalesced``);
  results that carry events are kept in a second deque so that an event's frame is never lost.
* :meth:`DashboardHub.drain` runs on the dashboard's own event-loop thread: it converts pending
  results into compact :class:`~dashboard.render.DisplayFrame` records (uint8 image, float32
  atom columns) in the history ring buffer, and the event log. All reading methods below
  ``drain`` are for that thread only.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import numpy as np

from dashboard.render import DisplayFrame, EventRow, display_frame
from engine.types import FrameResult
from stemwatch.config import DashboardConfig

log = logging.getLogger(__name__)


class _Rolling:
    """Rolling window of recent values (for p50/p99 and rates)."""

    def __init__(self, n: int = 200):
        self.v = collections.deque(maxlen=n)

    def add(self, x: float) -> None:
        self.v.append(float(x))

    def pct(self, q: float) -> float | None:
        return float(np.percentile(np.fromiter(self.v, float), q)) if self.v else None


class DashboardHub:
    """Thread-safe mailbox + history ring buffer + event log (see module docstring).

    cfg.history_frames : frames kept for the slider; cfg.max_update_bytes : per-update budget.
    """

    def __init__(self, cfg: DashboardConfig | None = None):
        self.cfg = cfg or DashboardConfig()
        self._lock = threading.Lock()
        self._pending: collections.deque = collections.deque()
        self._pending_events: collections.deque = collections.deque(maxlen=max(64, self.cfg.max_events))
        self._status: dict = {}
        self._status_time = 0.0
        self.published = 0            # results handed to publish()
        self.coalesced = 0            # results dropped before display because the display lagged
        # --- dashboard-thread state (only drain() and readers touch these) ---
        self.history: collections.deque[DisplayFrame] = collections.deque(maxlen=self.cfg.history_frames)
        self.event_frames: collections.OrderedDict[int, DisplayFrame] = collections.OrderedDict()
        self.events: collections.deque[EventRow] = collections.deque(maxlen=self.cfg.max_events)
        self._gallery_src: collections.OrderedDict = collections.OrderedDict()   # event key -> frames
        self.n_events = 0
        self.version = 0              # bumps when a frame enters the history
        self.events_version = 0       # bumps when an event enters the log
        self.next_idx = 0
        self.lanes: dict[int, int] = {}    # Si track id -> timeline lane, first seen first (newest series)
        self.lanes_series: str | None = None
        self.latency_total = _Rolling()    # t_done - t_acquired (s)
        self.analysed_times = collections.deque(maxlen=100)
        self.convert_s = _Rolling()        # time to convert one result (s)

    # ------------------------------------------------------------------ analysis thread
    def publish(self, result: FrameResult, status: dict | None = None) -> None:
        """Hand the newest result (and the service's status) to the display. O(1), never blocks on
        the display: safe to call from the analysis thread for every frame."""
        with self._lock:
            if len(self._pending) >= self.cfg.history_frames:
                self._pending.popleft()
                self.coalesced += 1
            self._pending.append(result)
            if result.events:
                self._pending_events.append(result)
            if status is not None:
                self._status = status
                self._status_time = time.time()
            self.published += 1

    def set_status(self, status: dict) -> None:
        """Replace the status shown (e.g. polled from the service while no frame arrives)."""
        with self._lock:
            self._status = status
            self._status_time = time.time()

    # ------------------------------------------------------------------ dashboard thread
    def drain(self, max_items: int | None = None) -> int:
        """Convert pending results into the history (oldest first). Returns how many were added."""
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
            with_events = list(self._pending_events)
            self._pending_events.clear()
        if max_items is not None and len(pending) > max_items:
            pending = pending[-max_items:]
        ids = {id(r) for r in pending}
        todo = [r for r in with_events if id(r) not in ids] + pending
        todo.sort(key=lambda r: (r.t_done or 0.0, r.seq))
        for r in todo:
            self._add(r)
        return len(todo)

    def _add(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        df = display_frame(result, self.next_idx, self.cfg.max_update_bytes)
        self.convert_s.add(time.perf_counter() - t0)
        self.next_idx += 1
        self.history.append(df)
        self.version += 1
        if df.t_done and df.t_acquired:
            self.latency_total.add(df.t_done - df.t_acquired)
        self.analysed_times.append(time.time())
        if df.series != self.lanes_series:      # track ids restart with a series: so do the lanes
            self.lanes, self.lanes_series = {}, df.series
        for tid in np.unique(df.si_track).tolist():
            if tid not in self.lanes:
                self.lanes[tid] = len(self.lanes)
        if df.events:
            self.event_frames[df.idx] = df
            while len(self.event_frames) > self.cfg.max_event_frames:
                self.event_frames.popitem(last=False)
            now = time.time()
            for ev in df.events:
                self.n_events += 1
                self.events.append(EventRow(self.n_events, df.idx, df.series, ev, now))
                self._gallery_keep(self.n_events, df, ev)
            self.events_version += 1

    def _gallery_keep(self, key: int, df, ev) -> None:
        """Keep what the before/after picture of a transformation needs (the frame before its first
        change is still in the ring when it is confirmed); drawn later, on demand (off the alert path)."""
        from dashboard import gallery
        from engine.track.categories import BOOKKEEPING

        if getattr(ev, "category", "") == BOOKKEEPING:
            return
        frames = [f for f in self.history if f is not df and f.series == df.series
                  and f.seq >= min(int(ev.first_frame) if int(ev.first_frame) >= 0 else int(ev.frame), int(ev.frame)) - 8]
        self._gallery_src[key] = (gallery.before_frame(frames, ev, df.series), df, frames)
        while len(self._gallery_src) > self.cfg.max_event_frames:
            self._gallery_src.popitem(last=False)

    def gallery_png(self, row) -> bytes | None:
        """The before/after PNG of event ``row`` (drawn once, then cached on the row); None for
        bookkeeping, for events whose frames are no longer kept, without Pillow, or if drawing fails."""
        from dashboard import gallery

        if row.gallery_png is not None or row.key not in self._gallery_src or not gallery.available():
            return row.gallery_png
        before, after, frames = self._gallery_src[row.key]
        try:
            item = gallery.item_from_display(row.event, before, after, frames)
            row.gallery_png = gallery.png_bytes(gallery.render(item))
        except Exception:  # a picture must never stop the event log
            log.exception("gallery picture for event %s failed", row.event.kind)
        return row.gallery_png

    def status(self) -> tuple[dict, float]:
        """The newest status dict and the Unix time it was received."""
        with self._lock:
            return self._status, self._status_time

    def newest(self) -> DisplayFrame | None:
        return self.history[-1] if self.history else None

    def frame(self, idx: int) -> DisplayFrame | None:
        """The frame with history index ``idx``: from the ring, else from the kept event frames,
        else the nearest older frame still in the ring (None if nothing at or before it)."""
        if self.history:
            first = self.history[0].idx
            pos = idx - first
            if 0 <= pos < len(self.history):
                return self.history[pos]
        if idx in self.event_frames:
            return self.event_frames[idx]
        if self.history and idx >= self.history[-1].idx:
            return self.history[-1]
        return None

    def idx_range(self) -> tuple[int, int] | None:
        return (self.history[0].idx, self.history[-1].idx) if self.history else None

    def analysed_fps(self, window_s: float = 2.0) -> float:
        now = time.time()
        n = sum(1 for t in self.analysed_times if now - t <= window_s)
        return n / window_s

    def timeline_columns(self, since_idx: int = -1) -> dict:
        """Per-dopant coordination timeline over the history of the newest series: one rectangle per
        (frame, Si track). ``since_idx``: only frames after that history index (for streaming).

        x : frame seq (float32), lane : Si track lane (float32), coord : int8 coordination.
        """
        empty = {"x": np.zeros(0, np.float32), "lane": np.zeros(0, np.float32),
                 "coord": np.zeros(0, np.int8), "tid": np.zeros(0, np.int32)}
        xs, tids, coords = [], [], []
        for df in self.history:
            if df.si_track.size and df.series == self.lanes_series and df.idx > since_idx:
                xs.append(np.full(df.si_track.size, df.seq, np.float32))
                tids.append(df.si_track)
                coords.append(df.si_coord)
        if not xs:
            return empty
        tid = np.concatenate(tids)
        lut_keys = np.fromiter(self.lanes.keys(), np.int64, len(self.lanes))
        lut_vals = np.fromiter(self.lanes.values(), np.float32, len(self.lanes))
        order = np.argsort(lut_keys)
        lane = lut_vals[order][np.searchsorted(lut_keys[order], tid)]
        return {"x": np.concatenate(xs), "lane": lane.astype(np.float32),
                "coord": np.concatenate(coords).astype(np.int8), "tid": tid.astype(np.int32)}

    def timeline_events(self) -> dict:
        """Event markers on the timeline (events of Si tracks that have a lane)."""
        xs, lanes, labels = [], [], []
        for row in self.events:
            lane = self.lanes.get(int(row.event.atom_id)) if row.series == self.lanes_series else None
            if lane is not None:
                xs.append(float(row.event.frame))
                lanes.append(float(lane))
                labels.append(row.event.kind)
        return {"x": xs, "lane": lanes, "kind": labels}

    def summary(self) -> dict[str, Any]:
        """Counters for the status panel and for tests."""
        return {"published": self.published, "coalesced": self.coalesced, "history": len(self.history),
                "events": self.n_events}
