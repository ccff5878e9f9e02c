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
from engine.types import Atoms, Chemistry, FrameChemistry, FrameResult
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
        frame off the receiver; then ``timings_s["wait"] = t_start - frame.t_received``.

        The same as ``self.track(analyze_frame(frame, self.inferencer, self.cfg.chemistry, ...))``:
        the order-independent part, then the sequential one (what the Dask archive path runs on
        workers and on the client, :mod:`engine.archive`)."""
        return self.track(analyze_frame(frame, self.inferencer, self.cfg.chemistry, keep_image=self.keep_image,
                                        t_start=t_start))

    def track(self, fc: FrameChemistry) -> FrameResult:
        """The sequential part of :meth:`process`: name the defects' motifs (the library numbers new
        ones in order of first sight), track, raise events. Call it in frame order."""
        if fc.series != self.series:
            if self.series is not None:
                log.info("new series %s (was %s): tracks reset", fc.series, self.series)
            self.tracker.reset()
            self.series = fc.series
        self.frames += 1
        timings = dict(fc.timings_s)
        spent = float(timings.pop("total", 0.0))
        msg = fc.error
        if msg is None:
            p2 = time.perf_counter()
            try:
                chem = fc.chemistry
                self.motifs.observe(chem.defects, chem.atoms.pixel_size_A)
                upd = self.tracker.update(chem, int(fc.seq), float(fc.t_acquired), frame_shape=fc.frame_shape)
            except Exception as exc:  # one bad frame must not stop the analysis
                msg = f"{type(exc).__name__}: {exc}"
                log.debug("%s", traceback.format_exc())
            p3 = time.perf_counter()
            if msg is None:
                timings["tracking"] = p3 - p2
            spent += p3 - p2
        timings["total"] = spent
        if msg is not None:
            self.errors += 1
            self.last_error = msg
            log.error("frame %s/%s skipped: %s", fc.series, fc.seq, msg)
            return FrameResult(series=fc.series, seq=int(fc.seq), t_acquired=float(fc.t_acquired),
                               pixel_size_A=float(fc.pixel_size_A), frame_shape=fc.frame_shape,
                               chemistry=empty_chemistry(float(fc.pixel_size_A), fc.frame_shape),
                               track_ids=np.zeros(0, np.int64), events=[], timings_s=timings,
                               t_done=time.time(), image=fc.image, error=msg, confirmed=np.zeros(0, bool))
        return FrameResult(series=fc.series, seq=int(fc.seq), t_acquired=float(fc.t_acquired),
                           pixel_size_A=float(fc.pixel_size_A), frame_shape=fc.frame_shape, chemistry=chem,
                           track_ids=upd.track_ids, events=upd.events, drift_px=upd.drift_px,
                           timings_s=timings, t_done=time.time(), image=fc.image, confirmed=upd.confirmed)

    @classmethod
    def tracking_only(cls, cfg: Config | None = None, motifs=None) -> "Pipeline":
        """A pipeline for :meth:`track` alone, for chemistry computed elsewhere (Dask workers):
        no network is loaded and :meth:`process` raises."""
        return cls(cfg, inferencer=NoInference(), motifs=motifs)


class NoInference:
    """The inferencer of :meth:`Pipeline.tracking_only`: it has no network."""

    description = "none (chemistry computed elsewhere)"

    def predict(self, image, pixel_size_A):
        raise RuntimeError("this pipeline only tracks (Pipeline.tracking_only): it has no network")


def analyze_frame(frame, inferencer, chem_cfg, keep_image: bool = False,
                  t_start: float | None = None) -> FrameChemistry:
    """frame -> network -> atoms -> lattice graph: the part of :meth:`Pipeline.process` that
    depends on the frame alone, so any process may compute it for any frame (a Dask worker of
    ``stemwatch analyze --scheduler``); :meth:`Pipeline.track` takes it on in frame order.

    inferencer : ``predict(image, pixel_size_A) -> Probabilities``; chem_cfg : ChemistryConfig.
    A failing stage is reported in ``error`` (chemistry None), never raised.
    """
    import engine.chem as chem

    live = t_start is not None
    t_start = time.time() if t_start is None else t_start
    shape = tuple(int(v) for v in np.shape(frame.data))[:2]
    timings: dict[str, float] = {}
    if live and getattr(frame, "t_received", 0.0):
        timings["wait"] = max(0.0, t_start - float(frame.t_received))
    p0 = time.perf_counter()
    result, msg = None, None
    try:
        probs = inferencer.predict(frame.data, frame.pixel_size_A)
        p1 = time.perf_counter()
        sub = getattr(inferencer, "last_timings_s", None) or {}
        if "preprocess" in sub and "network" in sub:
            timings["preprocess"] = float(sub["preprocess"])
            timings["network"] = float(sub["network"])
        else:
            timings["network"] = p1 - p0
        result = chem.analyze(probs, chem_cfg, image=frame.data)    # motifs are named in order, by track()
        timings["atoms_graph"] = time.perf_counter() - p1
    except Exception as exc:  # one bad frame must not stop the analysis
        msg = f"{type(exc).__name__}: {exc}"
        log.debug("%s", traceback.format_exc())
    timings["total"] = time.perf_counter() - p0
    return FrameChemistry(series=frame.series, seq=int(frame.seq), t_acquired=float(frame.t_acquired),
                          pixel_size_A=float(frame.pixel_size_A), frame_shape=shape, chemistry=result,
                          timings_s=timings, error=msg, image=frame.data if keep_image else None)
