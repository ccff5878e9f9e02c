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
from collections import deque
from dataclasses import dataclass

import numpy as np

from engine.track import Tracker
from engine.health.atoms import drop_outside, estimate_snr
from engine.health.material_atoms import unsure_region
from engine.health.material_overlayer import SI_MIN_BOND_A, overlayer_region, overlayer_si, si_near_contamination
from engine.health.off_lattice import DISC_A, RADIUS_A as OFF_LATTICE_A, discs, off_lattice, unbonded_dim
from engine.health.overlayer_hold import SI_HOLD_A
from engine.health.monitor import SKIP_VERDICTS
from engine.types import Atoms, Chemistry, Event, FrameChemistry, FrameResult
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


#: A graphene region mask is applied when it covers less than this fraction of the field (the verdict
#: gives a mask only where part of the field clearly shows no graphene lattice; whole graphene frames
#: get none: docs/material.md).
MASK_BELOW = 1.0
#: Frames smaller than this (either side) get no material verdict (assumed graphene): a few unit cells
#: with one dopant near the centre do not show two equal sublattices reliably.
MIN_SIDE_PX = 192
#: :meth:`Pipeline.overlap_network` not made yet
_NOT_MADE = object()


def mask_probabilities(probs, mask: np.ndarray):
    """Probabilities with every model pixel outside ``mask`` (frame-shaped bool) set to background, so
    no atom is found outside the graphene region."""
    from engine.types import Probabilities

    h, w = probs.shape
    H, W = mask.shape
    ry = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    rx = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    out = ~mask[ry][:, rx]
    p = probs.p.copy()
    p[:, out] = 0.0
    p[0, out] = 1.0
    return Probabilities(p, probs.pixel_size_A, probs.frame_shape, probs.frame_pixel_size_A)


@dataclass
class SeriesState:
    """What :func:`analyze_frame` carries from one frame of a series to the next, as one object, so
    that whoever analyses a series in frame order (a :class:`Pipeline`; a chain of Dask tasks, each
    taking the state the one before it left: :mod:`engine.archive`) analyses every frame alike.

    material_cadence : the material verdict, a full check now and then and a guard in between
    (:class:`engine.health.material_cadence.MaterialCadence`). overlayer_hold : the contamination
    region of recent frames, moved with the drift (:class:`engine.health.overlayer_hold.OverlayerHold`).
    field_change : the last frame, to tell a Si from contamination moving between frames
    (:class:`engine.health.overlayer_change.FieldChange`). Each forgets a series when a frame of
    another one comes; :meth:`fov_jump` is what a jump of the field found after a frame's atoms
    (:meth:`Pipeline.track`) does to them. Plain objects: it pickles, and a copy carries on alike."""

    material_cadence: object
    overlayer_hold: object
    field_change: object

    @classmethod
    def new(cls, cfg: Config) -> "SeriesState":
        from engine.health.material_cadence import MaterialCadence
        from engine.health.overlayer_change import FieldChange
        from engine.health.overlayer_hold import OverlayerHold

        return cls(MaterialCadence(cfg.chemistry.material_recheck_every_n_frames, MASK_BELOW), OverlayerHold(),
                   FieldChange())

    def as_kwargs(self) -> dict:
        """The keyword arguments of :func:`analyze_frame` that carry it."""
        return dict(material_cadence=self.material_cadence, overlayer_hold=self.overlayer_hold,
                    field_change=self.field_change)

    def reset(self) -> None:
        """A new series: nothing of the last one is carried."""
        self.material_cadence.reset()
        self.overlayer_hold.reset()
        self.field_change.reset()

    def fov_jump(self) -> None:
        """The field jumped (found after a frame's atoms): the next frame gets a full material check, and
        no contamination region or last frame of the old field is carried."""
        self.material_cadence.invalidate("fov_jump (the dopants moved)")
        self.overlayer_hold.reset()
        self.field_change.reset()


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
        if inferencer is None:
            from engine.infer import Inferencer

            inferencer = Inferencer(self.cfg.inference)
        self.inferencer = inferencer
        self.motifs = motifs if motifs is not None else chem.MotifLibrary(self.cfg.chemistry.motif_names_path,
                                                                          self.cfg.chemistry)
        self.tracker = Tracker(self.cfg.tracking, _tracker_events(self.cfg.events, self.cfg.events))
        from engine.health.monitor import HealthMonitor

        self.health = HealthMonitor(getattr(self.cfg, "health", None),
                                    float(getattr(inferencer, "model_pixel_size_A", 0.2) or 0.2))
        # what analyze_frame carries from frame to frame of a series
        self.series_state = SeriesState.new(self.cfg)
        self.keep_image = keep_image
        self.series: str | None = None
        self._run = 0                     # Frame.run of the series being tracked (a rerun resets)
        self._scale_noted: tuple | None = None   # (series, run) whose corrected pixel size was logged
        self.frames = 0
        self.errors = 0
        self.last_error: str | None = None
        self.recent_ok: deque = deque(maxlen=int(self.cfg.events.k_of_n[1]))   # health of the last n frames
        self.recent_events: deque = deque(maxlen=int(self.cfg.events.k_of_n[1]))  # their transformation events
        self._overlap_net = _NOT_MADE     # overlap_network(), made on first use

    # ------------------------------------------------------------------------------ info
    @property
    def material_cadence(self):
        return self.series_state.material_cadence

    @property
    def overlayer_hold(self):
        return self.series_state.overlayer_hold

    @property
    def field_change(self):
        return self.series_state.field_change

    @property
    def backend_description(self) -> str:
        inf = self.inferencer
        return str(getattr(inf, "description", None) or getattr(getattr(inf, "backend", None), "description", "")
                   or type(inf).__name__)

    # ------------------------------------------------------------------------------ control
    def reset(self) -> None:
        """Forget tracks (a new series)."""
        self.tracker.reset()
        self.health.reset()
        self.series_state.reset()
        self.series = None
        self._scale_noted = None

    def set_events(self, events: EventConfig) -> None:
        """Change debounce / confidence thresholds (takes effect on the next frame)."""
        self.tracker.set_event_config(_tracker_events(events, self.cfg.events))
        self.recent_ok = deque(self.recent_ok, maxlen=int(events.k_of_n[1]))
        self.recent_events = deque(self.recent_events, maxlen=int(events.k_of_n[1]))
        self.cfg = self.cfg.replace(events={"k_of_n": tuple(events.k_of_n),
                                            "min_confidence": events.min_confidence})

    def overlap_network(self):
        """The inferencer of :class:`engine.overlap.Overlap`'s network thread, made once by
        :func:`engine.overlap.network_for_overlap` (a session of its own, and on small grids a process
        of its own) and kept until :meth:`close`, so that every overlap of this pipeline shares it;
        None: the network thread uses :attr:`inferencer`."""
        if self._overlap_net is _NOT_MADE:
            from engine.overlap import network_for_overlap

            self._overlap_net = network_for_overlap(self)
        return self._overlap_net

    def close(self) -> None:
        net, self._overlap_net = self._overlap_net, _NOT_MADE
        if net is not None and net is not _NOT_MADE:
            net.close()
        close = getattr(self.inferencer, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------ work
    def check(self, frame) -> tuple:
        """The first, sequential step of :meth:`process` on its own: ``(health, seconds)``, the
        frame's :class:`engine.health.FrameHealth` from :meth:`engine.health.HealthMonitor.before`
        and the time it took. Call it in frame order; pass it to :meth:`process` as ``checked``."""
        p0 = time.perf_counter()
        health = self.health.before(frame)
        return health, time.perf_counter() - p0

    def may_check_ahead(self, frame) -> bool:
        """Whether :meth:`check` on ``frame`` may run before :meth:`process` of the frame checked
        last (:meth:`engine.health.HealthMonitor.may_run_ahead`): the same results either way."""
        return self.health.may_run_ahead(frame)

    def process(self, frame, t_start: float | None = None, checked: tuple | None = None,
                inferencer=None) -> FrameResult:
        """Analyse one :class:`streamer.frame.Frame`. ``t_start``: Unix time a live caller took the
        frame off the receiver; then ``timings_s["wait"] = t_start - frame.t_received``.
        ``checked``: :meth:`check` of this frame done ahead (:mod:`engine.overlap`); inferencer:
        the one to use for this frame (default :attr:`inferencer`; :mod:`engine.overlap` passes
        one whose network ran ahead on its own thread).

        Three steps: the frame's health from its raw pixels and the series so far (verdicts and the
        pixel size to analyse at: :meth:`engine.health.HealthMonitor.before`, sequential),
        :func:`analyze_frame` (network, atoms, graph, with the series' :class:`SeriesState`) and the
        sequential :meth:`track`. The Dask archive path (:mod:`engine.archive`) runs the same three: the
        health pass in frame order on the worker that plans the input, ``analyze_frame`` on any
        worker in chunks that hand the series state on, ``track`` on the client."""
        health, pre = checked if checked is not None else self.check(frame)
        fc = analyze_frame(frame, inferencer if inferencer is not None else self.inferencer, self.cfg,
                           health=health, keep_image=self.keep_image, t_start=t_start,
                           **self.series_state.as_kwargs())
        fc.timings_s["health"] = pre + fc.timings_s.get("health", 0.0)
        fc.timings_s["total"] = fc.timings_s.get("total", 0.0) + pre
        return self.track(fc)

    def track(self, fc: FrameChemistry) -> FrameResult:
        """The sequential part of :meth:`process`: the health verdicts that need the previous
        frames' atoms (:meth:`engine.health.HealthMonitor.after`), motif naming (the library numbers
        new ones in order of first sight), tracking, events. Call it in frame order. A frame that is
        not ``ok`` keeps its atoms (unreliable: no track ids) but is not fed to the tracker: no
        events, no change to any debounce window; a ``fov_jump`` resets the tracks with one
        bookkeeping event."""
        if fc.series != self.series or fc.run != self._run:       # a new series, or a series id started again
            if self.series is not None:
                log.info("new series %s (run %d; was %s): tracks reset", fc.series, fc.run, self.series)
            self.tracker.reset()
            self.recent_ok.clear()
            self.recent_events.clear()
            self.series = fc.series
            self._run = fc.run
        self.frames += 1
        timings = dict(fc.timings_s)
        spent = float(timings.pop("total", 0.0))
        health = fc.health
        if health is not None and health.scale_note and self._scale_noted != (fc.series, fc.run):
            self._scale_noted = (fc.series, fc.run)         # once per series, as the monitor's own warning
            msg = f"series {fc.series}: {health.scale_note}"
            log.warning("%s", msg)
            self.health.warnings.append(msg)
        if fc.error is None and fc.chemistry is None:          # the network was not run (blank, too large, ...)
            self.recent_ok.append(False)
            self.recent_events.append(0)
            timings["total"] = spent
            return self._result(fc, empty_chemistry(fc.pixel_size_A, fc.frame_shape), timings, health=health)
        msg = fc.error
        if msg is None:
            p2 = time.perf_counter()
            try:
                chem = fc.chemistry
                if health is not None:
                    health = self.health.after(health, chem, fc.frame_shape, snr=health.snr,
                                               area_fraction=_graphene_fraction(fc.material))
                self.motifs.observe(chem.defects, chem.atoms.pixel_size_A)
                if health is not None and not health.ok:
                    self.recent_ok.append(False)
                    self.recent_events.append(0)
                    events = []
                    if "fov_jump" in health.verdicts:
                        self.tracker.reset()
                        self.series_state.fov_jump()
                        events = [_fov_jump_event(fc)]
                    timings["tracking"] = 0.0
                    timings["total"] = spent + time.perf_counter() - p2
                    n = len(chem.atoms)
                    return self._result(fc, chem, timings, health=health, events=events,
                                        track_ids=np.full(n, -1, np.int64), confirmed=np.zeros(n, bool))
                self.recent_ok.append(True)
                upd = self.tracker.update(chem, int(fc.seq), float(fc.t_acquired), frame_shape=fc.frame_shape,
                                          analysed=_analysed_part(fc.material))
                self.recent_events.append(sum(e.category != "bookkeeping" for e in upd.events))
                if upd.events and getattr(self.cfg.events, "calibrate_confidence", False):
                    from engine.health.confidence import calibrate_events

                    calibrate_events(upd.events, chem.atoms, upd.track_ids,
                                     health.snr if health is not None else float("nan"), self.bad_fraction,
                                     self.window_events)
                    # the threshold applies to the confidence the operator sees
                    upd.events[:] = [e for e in upd.events if e.confidence >= self.cfg.events.min_confidence]
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
            return self._result(fc, empty_chemistry(float(fc.pixel_size_A), fc.frame_shape), timings,
                                health=health, error=msg)
        return self._result(fc, chem, timings, health=health, events=upd.events, track_ids=upd.track_ids,
                            confirmed=upd.confirmed, drift_px=upd.drift_px)

    @property
    def bad_fraction(self) -> float:
        """Fraction of the series' last n frames (the debounce window) whose health was not ok."""
        return 1.0 - sum(self.recent_ok) / len(self.recent_ok) if self.recent_ok else 0.0

    @property
    def window_events(self) -> int:
        """Transformation events the tracker raised in the series' last n frames (the debounce window),
        before any confidence threshold of the pipeline: an input of the calibrated event confidence."""
        return int(sum(self.recent_events))

    @staticmethod
    def _result(fc: FrameChemistry, chem: Chemistry, timings: dict, health=None, events=(), track_ids=None,
                confirmed=None, drift_px=(0.0, 0.0), error: str | None = None) -> FrameResult:
        n = len(chem.atoms)
        return FrameResult(series=fc.series, seq=int(fc.seq), t_acquired=float(fc.t_acquired),
                           pixel_size_A=float(fc.pixel_size_A), frame_shape=fc.frame_shape, chemistry=chem,
                           track_ids=np.zeros(n, np.int64) if track_ids is None else track_ids,
                           events=list(events), drift_px=drift_px, timings_s=timings, t_done=time.time(),
                           image=fc.image, error=error,
                           confirmed=np.zeros(n, bool) if confirmed is None else confirmed, health=health,
                           material=fc.material)

    @classmethod
    def tracking_only(cls, cfg: Config | None = None, motifs=None) -> "Pipeline":
        """A pipeline for :meth:`track` alone, for chemistry computed elsewhere (Dask workers):
        no network is loaded and :meth:`process` raises."""
        return cls(cfg, inferencer=NoInference(), motifs=motifs)


def _graphene_fraction(material) -> float:
    """The part of the field analysed: the graphene mask's fraction when the mask was applied, else 1."""
    if material is None or getattr(material, "mask", None) is None:
        return 1.0
    f = float(material.graphene_fraction)
    return f if 0.0 < f < MASK_BELOW else 1.0


def _analysed_part(material):
    """The part of the field analysed (frame-shaped bool) when the verdict's mask was applied, else None:
    for the tracker its boundary is an edge of the field."""
    return material.mask if _graphene_fraction(material) < 1.0 else None


def _tracker_events(events: EventConfig, own: EventConfig) -> EventConfig:
    """The tracker's event configuration for thresholds ``events`` when the pipeline's own is ``own``:
    with ``own.calibrate_confidence`` the pipeline applies ``min_confidence`` to the calibrated
    confidence, and the tracker raises every event whose raw confidence reaches
    :data:`engine.health.confidence.RAW_MIN_CONFIDENCE` (the events the calibration was fitted on) or
    the threshold, whichever is lower."""
    if getattr(own, "calibrate_confidence", False):
        import dataclasses

        from engine.health.confidence import RAW_MIN_CONFIDENCE

        return dataclasses.replace(events, min_confidence=min(RAW_MIN_CONFIDENCE, float(events.min_confidence)))
    return events


def _fov_jump_event(fc: FrameChemistry) -> Event:
    nan = float("nan")
    return Event(frame=int(fc.seq), t_acquired=float(fc.t_acquired), latency_s=0.0, kind="fov_jump", atom_id=-1,
                 x=nan, y=nan, x_A=nan, y_A=nan, before="", after="", confidence=1.0, first_frame=int(fc.seq))


class NoInference:
    """The inferencer of :meth:`Pipeline.tracking_only`: it has no network."""

    description = "none (chemistry computed elsewhere)"
    model_pixel_size_A = 0.2

    def predict(self, image, pixel_size_A):
        raise RuntimeError("this pipeline only tracks (Pipeline.tracking_only): it has no network")


def analyze_frame(frame, inferencer, cfg: Config, health=None, keep_image: bool = False,
                  t_start: float | None = None, material_cadence=None, overlayer_hold=None,
                  field_change=None) -> FrameChemistry:
    """frame -> network -> atoms -> lattice graph: the part of :meth:`Pipeline.process` that
    depends on the frame (given its health from :meth:`engine.health.HealthMonitor.before`,
    which says the pixel size to analyse at and whether to run the network at all) and on the state the
    series' earlier frames left (the three objects of a :class:`SeriesState`, passed as keywords), so any
    process given that state may compute it (a Dask worker of ``stemwatch analyze --scheduler``);
    :meth:`Pipeline.track` takes it on in frame order.

    inferencer : ``predict(image, pixel_size_A) -> Probabilities``; cfg : the :class:`Config`.
    health : the frame's :class:`engine.health.FrameHealth` (None: analyse at the declared size).
    The estimated C-atom SNR is stored in ``health.snr``. A failing stage is reported in ``error``
    (chemistry None), never raised; a frame the network is not run on has chemistry None and no error.
    material_cadence : the series' :class:`engine.health.material_cadence.MaterialCadence` (frames in
    order: the full material check now and then, a guard in between); None: a full check on this frame.
    overlayer_hold : the series' :class:`engine.health.overlayer_hold.OverlayerHold` (frames in order: the
    contamination region found on recent frames is left out too, moved with the drift); None: the
    region of this frame alone.
    field_change : the series' :class:`engine.health.overlayer_change.FieldChange` (frames in order: a Si
    around which the field changes between frames by far more than its noise is judged contamination, on a
    series where contamination was found); None: not judged so.
    """
    from engine.chem.atoms import contrast_maps, find_atoms

    live = t_start is not None
    t_start = time.time() if t_start is None else t_start
    shape = tuple(int(v) for v in np.shape(frame.data))[:2]
    timings: dict[str, float] = {}
    if live and getattr(frame, "t_received", 0.0):
        timings["wait"] = max(0.0, t_start - float(frame.t_received))
    ps = float(health.pixel_size_A) if health is not None else float(frame.pixel_size_A)
    usable_ps = bool(np.isfinite(ps) and ps > 0)
    out = dict(series=frame.series, seq=int(frame.seq), t_acquired=float(frame.t_acquired), frame_shape=shape,
               image=frame.data if keep_image else None, health=health, run=int(getattr(frame, "run", 0)))
    p0 = time.perf_counter()
    material = None
    if cfg.chemistry.material_check and not (health is not None and {"non_finite", "too_large"} & set(health.verdicts)):
        material = frame_material(frame) if material_cadence is None or min(shape, default=0) < MIN_SIDE_PX else \
            material_cadence.verdict(frame, health, frame_material)
        timings["material"] = time.perf_counter() - p0
        if not material.is_graphene:
            if overlayer_hold is not None:
                overlayer_hold.forget(frame)            # (another field: nothing of the last one is held)
            if field_change is not None:
                field_change.reset()
            # not graphene: no atoms, no species, no events; the tracker keeps its state (as after a
            # dropped frame). The material is judged at the frame's declared pixel size (or none): the
            # lattice scale estimate could "calibrate" any hexagonal lattice into graphene.
            timings["total"] = time.perf_counter() - p0
            return FrameChemistry(pixel_size_A=ps, chemistry=None, timings_s=timings, material=material, **out)
        ps = _graphene_scale(material, health, ps, cfg.health.scale_tolerance)
    coarse = float(getattr(health, "model_pixel_size_A", float("nan"))) if health is not None else float("nan")
    coarse_ok = bool(np.isfinite(coarse) and set(health.verdicts) & SKIP_VERDICTS == {"too_large"})
    if health is not None and (set(health.verdicts) & SKIP_VERDICTS and not coarse_ok or not usable_ps):
        if not usable_ps and not health.verdicts:
            health.add("no_lattice", "no declared pixel size and no graphene lattice to measure it")
        if not usable_ps:
            ps = float(frame.pixel_size_A or 0.0)
        timings["total"] = time.perf_counter() - p0
        return FrameChemistry(pixel_size_A=ps, chemistry=None, timings_s=timings, material=material, **out)
    result, msg = None, None
    try:
        pn = time.perf_counter()
        # a too_large frame that still resolves the lattice: on a coarser model grid (under the cap)
        probs = inferencer.predict(frame.data, ps, model_pixel_size_A=coarse) if coarse_ok else \
            inferencer.predict(frame.data, ps)
        # the atoms, where the network's process found them with these very probabilities
        # (engine/infer/process.py): used for them only, not for a masked copy
        atoms_for = getattr(inferencer, "atoms_for", None)
        net_probs, ahead = probs, (atoms_for(probs) if atoms_for is not None else None)
        if material is not None and material.mask is not None and material.graphene_fraction < MASK_BELOW:
            probs = mask_probabilities(probs, material.mask)
        p1 = time.perf_counter()
        sub = getattr(inferencer, "last_timings_s", None) or {}
        if "preprocess" in sub and "network" in sub:
            timings["preprocess"] = float(sub["preprocess"])
            timings["network"] = float(sub["network"])
        else:
            timings["network"] = p1 - pn
        maps = contrast_maps(frame.data, float(probs.frame_pixel_size_A))

        def chemistry_of(p, mask=None):   # atoms inside the frame, then the graph; motifs are named in order, by track()
            found = ahead if ahead is not None and p is net_probs else find_atoms(p, cfg.chemistry, frame.data, maps)
            atoms = drop_outside(found, shape, cfg.health.edge_drop_A)
            return _graph(atoms, cfg, frame.data, maps, mask)

        result = chemistry_of(probs)
        snr = float(estimate_snr(np.asarray(frame.data), result, maps))   # (the noise: measured once)
        if material is not None and snr >= 2.0:
            not_graphene = material.mask      # (the verdict's own mask: what the contamination rules add is below)
            # the part of the field where the network is unsure of its atoms: amorphous carbon or
            # contamination, which the Fourier mask leaves in (engine/health/material_atoms.py)
            region = unsure_region(result.atoms, shape)
            if region is not None:
                material = _leave_out(material, region)
            # contamination lying on the lattice, whose atoms the network is sure of: the hollows are
            # filled (engine/health/material_overlayer.py)
            over = overlayer_region(result.atoms, maps, result.rings, shape)
            if overlayer_hold is not None:
                over = overlayer_hold.update(frame, health, over, float(getattr(material, "lattice_constant_px",
                                                                                float("nan"))))
            if field_change is not None and OVERLAYER_SI_CHANGE:
                field_change.observe(frame, float(probs.frame_pixel_size_A),
                                     float(getattr(material, "lattice_constant_px", float("nan"))))
            if over is not None:
                material = _leave_out(material, over, OVERLAYER_WHY if overlayer_hold is None or not overlayer_hold.added
                                      else OVERLAYER_WHY + " (with the region of recent frames held)")
            analysed = None               # the mask the chemistry was last built inside (None: the first pass)
            if region is not None or over is not None:
                analysed = material.mask
                result = chemistry_of(mask_probabilities(probs, analysed), analysed)

            def leave_out_discs(idx, radius_A, why, material, result):
                """``material`` with a disc around each atom ``idx`` of ``result`` left out, and the chemistry
                built again inside the new mask."""
                m = _leave_out(material, discs(result.atoms.xy_px[idx], shape,
                                               radius_A / float(probs.frame_pixel_size_A)), why)
                return m, m.mask, chemistry_of(mask_probabilities(probs, m.mask), m.mask)

            def leave_out_off_lattice(material, analysed, result):
                """Heavy atoms of the part analysed that no ring of the lattice comes near (contamination or
                adatoms floating in a hole, on no graphene), and those nearer a ring but bonded to none of its
                atoms whose column is dimmer than a Si can be (contamination at a hole's rim), left out
                (engine/health/off_lattice.py): ``(material, analysed, result)`` as they are then."""
                if not OFF_LATTICE:
                    return material, analysed, result
                off = off_lattice(result)
                if len(off):
                    material, analysed, result = leave_out_discs(
                        off, DISC_A, OFF_LATTICE_WHY.format(len(off), "s" if len(off) > 1 else ""), material, result)
                dim = unbonded_dim(result, maps, snr)
                if len(dim):
                    material, analysed, result = leave_out_discs(
                        dim, SI_DISC_A, UNBONDED_DIM_WHY.format(len(dim), "s" if len(dim) > 1 else ""), material,
                        result)
                return material, analysed, result

            material, analysed, result = leave_out_off_lattice(material, analysed, result)
            # per atom: a "Si" with a bond too short for Si whose column is dimmer than a Si or wider than
            # the probe is the lattice C under a contamination atom (engine/health/material_overlayer.py)
            if OVERLAYER_SI:
                demoted = overlayer_si(result.atoms, maps, result.bonds, result.bond_length_A, snr,
                                       material.mask)
                # and the Si beside the contamination found, on weaker evidence: the part the rules above left
                # out (not what the verdict left out as not graphene) and the Si just judged
                left_out = _left_out_since(not_graphene, material.mask)
                demoted = np.union1d(demoted, si_near_contamination(result.atoms, maps, demoted, left_out, snr, SI_DISC_A))
                held = changed = 0
                if field_change is not None and OVERLAYER_SI_CHANGE:
                    # and the Si around which the field changed from the last frame by far more than its noise:
                    # contamination moving under the beam (engine/health/overlayer_change.py), on a series where
                    # contamination was found on this frame or a recent one
                    moving = field_change.changing_si(result.atoms, bool(len(demoted))
                                                      or (left_out is not None and bool(left_out.any())))
                    changed = int(len(np.setdiff1d(moving, demoted)))
                    demoted = np.union1d(demoted, moving)
                if overlayer_hold is not None and OVERLAYER_SI_HOLD:
                    # and those within SI_HOLD_A of a Si read as C on the last frames (moved with the drift)
                    demoted = overlayer_hold.read_as_c(result.atoms, demoted,
                                                       SI_HOLD_A / float(probs.frame_pixel_size_A))
                    held = overlayer_hold.si_added
                if len(demoted) and OVERLAYER_SI_DISCS:
                    # left out (a disc each) instead: for the tracker the field's edge, so a column read as
                    # C on some frames and as Si on others makes no event (engine.track: parked, revived)
                    material, analysed, result = leave_out_discs(
                        demoted, SI_DISC_A, OVERLAYER_SI_DISCS_WHY.format(len(demoted))
                        + (OVERLAYER_SI_CHANGED.format(changed) if changed else "")
                        + (OVERLAYER_SI_HELD.format(held, SI_HOLD_A) if held else ""), material, result)
                    # the rings through the columns just left out are gone: what they held to the lattice is
                    # judged again
                    material, analysed, result = leave_out_off_lattice(material, analysed, result)
                elif len(demoted):
                    result, material = _read_as_c(result, demoted, material, cfg, frame.data, maps, analysed, held)
        if health is not None:
            health.snr = snr
        # (atoms found by the network's process: their time there counts here)
        timings["atoms_graph"] = time.perf_counter() - p1 + (float(sub.get("atoms", 0.0)) if ahead is not None else 0.0)
    except Exception as exc:  # one bad frame must not stop the analysis
        msg = f"{type(exc).__name__}: {exc}"
        log.debug("%s", traceback.format_exc())
    timings["total"] = time.perf_counter() - p0
    return FrameChemistry(pixel_size_A=ps, chemistry=result, timings_s=timings, error=msg, material=material, **out)


def _graphene_scale(material, health, ps: float, tolerance: float) -> float:
    """The pixel size to analyse at, checked against the graphene lattice that the material verdict
    measured (in frame px) on a graphene frame: when the lattice estimate in force
    (``health.scale_source == "lattice"``) implies a graphene lattice constant off 2.46 A by more than
    ``tolerance``, it measured another lattice of the field (a MoS2 flake beside the graphene: its 3.16 A
    ring is the brighter one), and the frame is analysed at the declared size when that agrees with the
    graphene lattice, else at the size the graphene lattice gives. ``health`` is updated to match."""
    from engine.health.material import GRAPHENE_A

    a_px = float(getattr(material, "lattice_constant_px", float("nan")))
    if health is None or health.scale_source != "lattice" or not (np.isfinite(a_px) and a_px > 0):
        return ps
    implied = GRAPHENE_A / a_px
    if abs(ps / implied - 1.0) <= tolerance:
        return ps
    declared = float(health.declared_pixel_size_A)
    if np.isfinite(declared) and declared > 0 and abs(declared / implied - 1.0) <= tolerance:
        health.scale_source, health.pixel_size_A = "declared", declared
    else:
        health.pixel_size_A = implied
    health.scale_note = (f"the lattice estimate {ps:.4g} A/px measured another lattice of the field than "
                         f"graphene's (a = {a_px:.1f} px, {implied:.4g} A/px): analysing at "
                         f"{health.pixel_size_A:.4g} A/px ({health.scale_source})")
    return float(health.pixel_size_A)


#: atoms near the unsure / overlayer regions left out are not judged for defects, as near the frame edge
EDGE_AT_MASK = True
UNSURE_WHY = "the network is unsure of its atoms over {:.0f} % of the field (amorphous carbon or contamination)"
OVERLAYER_WHY = "the lattice's hollows are filled over {:.0f} % of the field (contamination on the graphene)"


#: reported Si that are contamination over the lattice (engine.health.material_overlayer.overlayer_si) are
#: left out (OVERLAYER_SI_DISCS) or read as C
OVERLAYER_SI = True
#: heavy atoms with no ring member of the graph within engine.health.off_lattice.RADIUS_A are left out
OFF_LATTICE = True
OFF_LATTICE_WHY = ("{} heavy atom{} off the lattice (no ring of the graph within " + f"{OFF_LATTICE_A:g}"
                   + " A: contamination or adatoms in a hole)")
#: ... and those bonded to no ring member whose column is dimmer than a Si can be
#: (engine.health.off_lattice.unbonded_dim; its DIM_MAX_NET 0: off), a disc of SI_DISC_A each
UNBONDED_DIM_WHY = ("{} heavy atom{} bonded to no ring of the lattice with a column dimmer than a Si "
                    "(contamination at a hole's rim)")
OVERLAYER_SI_WHAT = ("{} Si on contamination (a column far dimmer than the frame's Si or as wide as its C columns, "
                     "or a bond < 1.5 A with a column dimmer than Si or wider than the probe, or a bond < "
                     f"{SI_MIN_BOND_A:g} A, or beside contamination "
                     "found with a column dimmer than the frame's Si or as wide as its C)")
OVERLAYER_SI_WHY = OVERLAYER_SI_WHAT + ": read as C"
OVERLAYER_SI_HELD = " ({} of them within {:.1f} A of one read as C on recent frames)"
#: reported Si around which the field changes between frames by far more than its noise (moving
#: contamination: engine.health.overlayer_change; its CHANGE_MAX 0: off) are judged with them, on a series
#: where contamination was found on the frame or on one of the last few
OVERLAYER_SI_CHANGE = True
OVERLAYER_SI_CHANGED = " ({} of them where the field around changes between frames: moving contamination)"
#: the per-atom reading held over a series (engine.health.overlayer_hold.OverlayerHold.read_as_c). Off: on
#: the development movies it removed flicker events (95 -> 76), on 6 fresh movie seeds it did not (98 -> 103,
#: more on drifting ones), the false Si fell on every movie, no true Si changed (docs/material.md)
OVERLAYER_SI_HOLD = False
#: the Si the per-atom rule reads as C are left out of the analysis, a disc of SI_DISC_A each (the column,
#: not its lattice neighbours 1.42 A away), not read as C: for the tracker a left-out part is the field's
#: edge, so a column read as C on some frames and as Si on others is parked and revived, no event (with
#: material_overlayer.SI_REL_NET the ratio rule's flicker raised an si_appeared on held-out movie 104;
#: docs/material.md). False: read as C (the lattice keeps the site)
OVERLAYER_SI_DISCS = True
SI_DISC_A = 1.0
OVERLAYER_SI_DISCS_WHY = OVERLAYER_SI_WHAT + " ({{:.2f}} % of the field)"     # (_leave_out adds ": left out")


def _graph(atoms, cfg: Config, image, maps, mask=None):
    """The lattice graph and defects of ``atoms`` (motifs are named later, in frame order, by track());
    ``mask``: the analysed part of the field (frame-shaped bool) or None: atoms near what it leaves out are in
    the defect finder's edge zone when EDGE_AT_MASK."""
    from engine.chem.chemistry import build_chemistry

    return build_chemistry(atoms, cfg.chemistry, None, image, maps,
                           outside=None if mask is None or not EDGE_AT_MASK else ~np.asarray(mask, bool))


def _read_as_c(result, idx: np.ndarray, material, cfg: Config, image, maps, mask, held: int = 0):
    """``result`` (a Chemistry) with the atoms ``idx`` read as C and the graph built again (as
    ``chemistry_of`` built it: ``mask`` the analysed part or None), and ``material`` with the count in its
    reason (a new object: a carried verdict is shared between frames); ``held`` of them were read as C by
    the positions held from recent frames (engine.health.overlayer_hold), counted apart."""
    import dataclasses

    sp = np.array(result.atoms.species, np.int8, copy=True)
    sp[idx] = 0
    chem = _graph(dataclasses.replace(result.atoms, species=sp), cfg, image, maps, mask)
    why = OVERLAYER_SI_WHY.format(len(idx)) + (OVERLAYER_SI_HELD.format(held, SI_HOLD_A) if held else "")
    material = dataclasses.replace(material, reason=(material.reason or "") + "; " + why)
    return chem, material


def _left_out_since(before, after):
    """Frame-shaped bool, True where the mask ``after`` leaves out what ``before`` kept (None: the whole frame
    kept); None when ``after`` leaves out nothing."""
    if after is None:
        return None
    out = ~np.asarray(after, bool)
    return out if before is None else out & np.asarray(before, bool)


def _leave_out(material, region: np.ndarray, why: str = UNSURE_WHY):
    """``material`` (a graphene verdict) with ``region`` (frame-shaped bool) outside its mask, the
    fraction and the reason updated (``why``: formatted with the region's percentage of the field); a
    new object (a carried verdict is shared between frames)."""
    import dataclasses

    keep = ~region if material.mask is None else (np.asarray(material.mask, bool) & ~region)
    frac = float(keep.mean())
    why = "; " + why.format(100.0 * float(region.mean())) + ": left out"
    return dataclasses.replace(material, mask=keep, graphene_fraction=frac, reason=material.reason + why)


def frame_material(frame):
    """The frame's :class:`engine.health.material.MaterialVerdict` (frames smaller than
    :data:`MIN_SIDE_PX` are assumed graphene: too few unit cells for a verdict)."""
    from engine.health.material import MaterialVerdict, classify_material

    data = np.asarray(frame.data)
    if data.ndim != 2 or min(data.shape) < MIN_SIDE_PX:
        return MaterialVerdict("graphene", "frame too small for a material verdict: assumed graphene",
                               graphene_fraction=1.0)
    declared = frame.pixel_size_A
    return classify_material(data, float(declared) if declared else None)
