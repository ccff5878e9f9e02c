"""One pipeline object: frame -> inference -> atoms -> lattice graph -> tracks -> events.

Both ``stemwatch analyze`` (offline, any importable input) and the live service
(:mod:`engine.service`) run frames through :class:`Pipeline`, so live and offline results are the
same for the same frames.

>>> from stemwatch.config import Config
>>> pipe = Pipeline(Config())                       # doctest: +SKIP
>>> result = pipe.process(frame)                    # streamer.frame.Frame -> engine.types.FrameResult
>>> result.track_ids, result.events, result.timings_s   # doctest: +SKIP

A frame on which a stage raises (backend failure, malformed pixels) is reported -- the result has
``error`` set, an empty chemistry, no tracks and no events -- and skipped; the tracker keeps its
state and the next frame continues as after a dropped frame. A new ``series`` resets the tracker.
"""

from __future__ import annotations

import logging
import time
import traceback

import numpy as np

from engine.track import Tracker
from engine.types import Atoms, Chemistry, FrameResult
from stemwatch.config import Config, EventConfig

log = logging.getLogger(__name__)

#: Stages reported in ``FrameResult.timings_s`` (seconds), in order.
STAGES = ("preprocess", "network", "atoms_graph", "tracking")


def empty_chemistry(pixel_size_A: float, frame_shape=None) -> Chemistry:
    atoms = Atoms.empty(pixel_size_A)
    if hasattr(atoms, "frame_shape"):
        atoms.frame_shape = frame_shape
    return Chemistry(atoms=atoms, bonds=np.zeros((0, 2), np.int32), bond_length_A=np.zeros(0),
                     coordination=np.zeros(0, np.int16), defects=[], atom_defect=np.zeros(0, np.int32))


class Pipeline:
    """frame -> FrameResult. Not thread-safe: one thread calls :meth:`process`.

    cfg : :class:`stemwatch.config.Config`. inferencer : an object with
    ``predict(image, pixel_size_A) -> Probabilities`` (default: :class:`engine.infer.Inferencer`
    on ``cfg.inference``, which selects the backend). motifs : an
    :class:`engine.chem.MotifLibrary` (default: one on ``cfg.chemistry.motif_names_path``).
    keep_image : attach the frame's pixels to each result (the dashboard shows them).
    """

    def __init__(self, cfg: Config | None = None, inferencer=None, motifs=None, keep_image: bool = False):
        import engine.chem as chem

        self.cfg = cfg or Config()
        self._chem = chem
        if inferencer is None:
            from engine.infer import Inferencer

            inferencer = Inferencer(self.cfg.inference)
        self.inferencer = inferencer
        self.motifs = motifs if motifs is not None else chem.MotifLibrary(self.cfg.chemistry.motif_names_path,
                                                                          self.cfg.chemistry)
        self.tracker = Tracker(self.cfg.tracking, self.cfg.events)
        self.keep_image = keep_image
        self.series: str | None = None
        self._run = 0                     # Frame.run of the series being tracked (a rerun resets)
        self.frames = 0
        self.errors = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------------------ info
    @property
    def backend_description(self) -> str:
        inf = self.inferencer
        return str(getattr(inf, "description", None) or getattr(getattr(inf, "backend", None), "description", "")
                   or type(inf).__name__)

    # ------------------------------------------------------------------------------ control
    def reset(self) -> None:
        """Forget tracks (a new series)."""
        self.tracker.reset()
        self.series = None

    def set_events(self, events: EventConfig) -> None:
        """Change debounce / confidence thresholds (takes effect on the next frame)."""
        self.tracker.set_event_config(events)
        self.cfg = self.cfg.replace(events={"k_of_n": tuple(events.k_of_n),
                                            "min_confidence": events.min_confidence})

    def close(self) -> None:
        close = getattr(self.inferencer, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------ work
    def process(self, frame, t_start: float | None = None) -> FrameResult:
        """Analyse one :class:`streamer.frame.Frame`. ``t_start``: Unix time a live caller took the
        frame off the receiver; then ``timings_s["wait"] = t_start - frame.t_received``."""
        live = t_start is not None
        t_start = time.time() if t_start is None else t_start
        run = getattr(frame, "run", 0)
        if frame.series != self.series or run != self._run:
            if self.series is not None:
                log.info("new series %s (run %d; was %s): tracks reset", frame.series, run, self.series)
            self.tracker.reset()
            self.series = frame.series
            self._run = run
        self.frames += 1
        shape = tuple(int(v) for v in np.shape(frame.data))[:2]
        timings: dict[str, float] = {}
        if live and getattr(frame, "t_received", 0.0):
            timings["wait"] = max(0.0, t_start - float(frame.t_received))
        p0 = time.perf_counter()
        try:
            probs = self.inferencer.predict(frame.data, frame.pixel_size_A)
            p1 = time.perf_counter()
            sub = getattr(self.inferencer, "last_timings_s", None) or {}
            if "preprocess" in sub and "network" in sub:
                timings["preprocess"] = float(sub["preprocess"])
                timings["network"] = float(sub["network"])
            else:
                timings["network"] = p1 - p0
            chem = self._chem.analyze(probs, self.cfg.chemistry, image=frame.data, motifs=self.motifs)
            p2 = time.perf_counter()
            timings["atoms_graph"] = p2 - p1
            upd = self.tracker.update(chem, int(frame.seq), float(frame.t_acquired), frame_shape=shape)
            p3 = time.perf_counter()
            timings["tracking"] = p3 - p2
            timings["total"] = p3 - p0
        except Exception as exc:  # one bad frame must not stop the analysis
            self.errors += 1
            msg = f"{type(exc).__name__}: {exc}"
            self.last_error = msg
            log.error("frame %s/%s skipped: %s", frame.series, frame.seq, msg)
            log.debug("%s", traceback.format_exc())
            timings["total"] = time.perf_counter() - p0
            return FrameResult(series=frame.series, seq=int(frame.seq), t_acquired=float(frame.t_acquired),
                               pixel_size_A=float(frame.pixel_size_A), frame_shape=shape,
                               chemistry=empty_chemistry(float(frame.pixel_size_A), shape),
                               track_ids=np.zeros(0, np.int64), events=[], timings_s=timings,
                               t_done=time.time(), image=frame.data if self.keep_image else None,
                               error=msg, confirmed=np.zeros(0, bool))
        return FrameResult(series=frame.series, seq=int(frame.seq), t_acquired=float(frame.t_acquired),
                           pixel_size_A=float(frame.pixel_size_A), frame_shape=shape, chemistry=chem,
                           track_ids=upd.track_ids, events=upd.events, drift_px=upd.drift_px,
                           timings_s=timings, t_done=time.time(),
                           image=frame.data if self.keep_image else None, confirmed=upd.confirmed)
