"""The network of frame n+1 runs on its own thread while the caller finishes frame n (atoms, bond
graph, tracking, events): more frames per second on two cores, the same results.

ONNX Runtime (and TensorRT) release the GIL while they run, so the next frame's network and this
frame's chemistry and tracking proceed together. Only the network call moves to the other thread,
and it is a pure function of (pixels, pixel size); everything that keeps state across frames (the
health monitor, motif naming, the tracker) stays on the caller's thread in frame order, so the
results are those of :meth:`engine.pipeline.Pipeline.process`, frame by frame, in the same order.

* :class:`InferenceStage` -- one daemon thread running ``inferencer.predict`` for submitted frames in
  order (at most one frame waits), with an explicit :meth:`~InferenceStage.start` /
  :meth:`~InferenceStage.close` (``timeout_s``). An exception in the network is that frame's error.
* :class:`AheadInferencer` -- the inferencer :func:`engine.pipeline.analyze_frame` gets: its
  ``predict`` returns the result started ahead for those very pixels (or starts it now) and
  re-raises the network's exception, so a failing frame is reported exactly as without overlap.
* :class:`Overlap` -- frames in, results out in order, one frame held back: :meth:`Overlap.push`
  checks the new frame's health, starts its network, finishes the frame before and returns it.
  On the CPU backend with the default thread count the network thread gets its own session with
  one thread fewer (:func:`network_for_overlap`): on two cores, one core per stage; frames whose
  model grid is large (:data:`ALL_CORES_FROM_GRID_PX`, :data:`ALL_CORES_FROM_GRID_PX_INT8` for the
  INT8 network) run on every core, as the network then outlasts the rest of the frame before by far.

>>> with Overlap(pipe, enabled=True) as ov:                       # doctest: +SKIP
...     done = [d for f in frames for d in [ov.push(f)] if d] + [d for d in [ov.flush()] if d]

``stemwatch analyze`` (:mod:`engine.analyze`) and the live service (:mod:`engine.service`) run their
frames through it; ``Config.pipeline.overlap`` (``--overlap``) switches it: ``auto`` is on when the
process may use two or more CPUs. Live, a frame is held back while the next one is already waiting,
and waited on only while the stream comes faster than frame-by-frame analysis allows
(:func:`engine.service.hold_for_next_s`), so overlap never delays a frame to win throughput that
the stream does not need.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import queue
import threading
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.health.monitor import SKIP_VERDICTS

log = logging.getLogger(__name__)

#: how long :meth:`InferenceStage.close` waits for the network thread by default (seconds)
CLOSE_TIMEOUT_S = 10.0
#: frames started ahead that :class:`AheadInferencer` keeps (older ones are dropped unused)
MAX_AHEAD = 2


class StageClosed(RuntimeError):
    """The inference stage was closed (or its thread ended) before a frame's network ran."""


def overlap_enabled(setting: str = "auto") -> bool:
    """``"on"`` / ``"off"``, or ``"auto"``: on when this process may run on two or more CPUs."""
    if setting in ("on", "off"):
        return setting == "on"
    if setting != "auto":
        raise ValueError(f"overlap must be auto, on or off, got {setting!r}")
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus >= 2


class InferenceStage:
    """One thread that runs ``inferencer.predict(image, pixel_size_A)`` for each submitted frame, in
    the order submitted. :meth:`submit` returns a :class:`concurrent.futures.Future` of
    ``(probabilities, timings)`` (the inferencer's ``last_timings_s`` of that call) or of the
    exception the network raised; :meth:`result` waits for one. One thread submits and closes."""

    def __init__(self, inferencer, name: str = "stemwatch-network"):
        self.inferencer = inferencer
        self.name = name
        self._jobs: queue.Queue = queue.Queue(maxsize=1)      # at most one frame waits while one runs
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> "InferenceStage":
        if self._closed:
            raise StageClosed("the inference stage is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, image, pixel_size_A: float, model_pixel_size_A: float | None = None) -> Future:
        """Queue one frame's network (blocks while another frame already waits for the thread);
        ``model_pixel_size_A``: a coarser model grid (a frame over the grid cap), else the model's own."""
        if self._closed or self._thread is None:
            raise StageClosed("the inference stage is not running (start it first)" if not self._closed
                              else "the inference stage is closed")
        fut: Future = Future()
        while True:
            try:
                self._jobs.put((fut, image, float(pixel_size_A), model_pixel_size_A), timeout=0.5)
                return fut
            except queue.Full:
                if not self.alive:
                    raise StageClosed("the network thread ended") from None

    def result(self, fut: Future):
        """``(probabilities, timings)`` of a submitted frame; re-raises the network's exception;
        :class:`StageClosed` when the thread ends (or the stage is closed) without running it."""
        while True:
            if fut.cancelled():               # (wait() does not see a future cancelled before it ran)
                raise StageClosed("the inference stage was closed before this frame's network ran")
            done, _ = wait([fut], timeout=0.5)
            if done and not fut.cancelled():
                return fut.result()
            if not self.alive:
                raise StageClosed("the network thread ended before this frame's network ran")

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, image, ps, model_ps = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                probs = (self.inferencer.predict(image, ps) if model_ps is None else
                         self.inferencer.predict(image, ps, model_pixel_size_A=model_ps))
                timings = dict(getattr(self.inferencer, "last_timings_s", None) or {})
            except BaseException as exc:      # any failure is that frame's error, never a hang
                fut.set_exception(exc)
            else:
                fut.set_result((probs, timings))

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Cancel the frame waiting (if any), let the running one finish and end the thread within
        ``timeout_s``. False when the thread is still busy then (a backend call hung: it is
        abandoned, a daemon thread; do not close the inferencer under it)."""
        self._closed = True
        if self._thread is None:
            return True
        while True:                           # cancel what has not started
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and job[0].cancel():
                job[0].set_running_or_notify_cancel()     # wakes anyone waiting on it
        try:
            self._jobs.put(None, timeout=max(0.0, timeout_s))
        except queue.Full:
            pass
        self._thread.join(max(0.0, timeout_s))
        if self._thread.is_alive():
            log.error("the network thread did not stop within %.1f s (a backend call hung?): abandoned", timeout_s)
            return False
        return True


class AheadInferencer:
    """``predict(image, pixel_size_A)`` served by an :class:`InferenceStage`: the result started
    ahead with :meth:`start` for the same pixels (the same array object) and pixel size, else one
    started now. Timings of the call in :attr:`last_timings_s`, as :class:`engine.infer.Inferencer`."""

    def __init__(self, stage: InferenceStage):
        self.stage = stage
        self._ahead: collections.deque = collections.deque()     # (image, pixel size, future), oldest first
        self.last_timings_s: dict[str, float] = {}

    def start(self, image, pixel_size_A: float) -> None:
        """Start the network on a frame that :meth:`predict` will be asked for soon."""
        self._ahead.append((image, float(pixel_size_A), self.stage.submit(image, pixel_size_A)))
        while len(self._ahead) > MAX_AHEAD:
            self._ahead.popleft()[2].cancel()

    def predict(self, image, pixel_size_A: float, model_pixel_size_A: float | None = None):
        ps = float(pixel_size_A)
        fut = None
        if model_pixel_size_A is not None:     # a frame over the grid cap, on a coarser grid: never started ahead
            fut = self.stage.submit(image, ps, model_pixel_size_A)
        ahead = self._ahead if fut is None else ()
        for i, (img, p, f) in enumerate(ahead):
            if img is image and p == ps:
                for _ in range(i):             # older ones nobody asked for (frames skipped)
                    self._ahead.popleft()[2].cancel()
                fut = self._ahead.popleft()[2]
                break
        if fut is None:
            fut = self.stage.submit(image, ps)
        self.last_timings_s = {}
        probs, self.last_timings_s = self.stage.result(fut)
        return probs

    def atoms_for(self, probs):
        """The atoms found with ``probs`` where the network ran (:mod:`engine.infer.process`), else None."""
        f = getattr(self.stage.inferencer, "atoms_for", None)
        return f(probs) if f is not None else None


#: model-grid pixels from which the network thread runs on every core (the pipeline's own session):
#: there the network of one frame takes longer than the chemistry and tracking of the one before, so
#: the core those leave idle serves it. Measured on 2 idle cores, overlap on, interleaved passes
#: (docs/tracking.md): 1024^2 frames at 0.1 A/px (a 512^2 grid) 9.2 -> 12.0 frames/s on every core,
#: 512^2 (a 256^2 grid) 39.0 -> 41.9; 256^2 (128^2) mixed (105.8 -> 94.0 in one run, better in others).
ALL_CORES_FROM_GRID_PX = 256 * 256
#: the same for the INT8 network: with its padded channels and softmax tail (issue 20) it runs a 256^2
#: grid no faster on two threads than on one (one thread 10.9 ms, two 11.6 ms, idle, interleaved), so
#: below 320^2 the network thread keeps one thread and the chemistry the other core. Overlap on,
#: interleaved passes, idle: 512^2 frames (a 256^2 grid) 47.7 -> 53.4 frames/s on one thread, 768^2
#: (384^2) 30.1 on every core against 28.6, 1024^2 (512^2) 18.6 against 17.0 (docs/tracking.md)
ALL_CORES_FROM_GRID_PX_INT8 = 320 * 320


class GridRouted:
    """``predict`` on one of two inferencers by the size of the frame's model grid: ``small`` (the
    network thread's own session, one core fewer) below ``from_grid_px`` model pixels, ``large`` (the
    pipeline's, every core) from there on. Both run the same model file (the same numbers at any
    thread count). :meth:`close` closes only ``small`` (``large`` belongs to the pipeline)."""

    def __init__(self, small, large, model_pixel_size_A: float, from_grid_px: int = ALL_CORES_FROM_GRID_PX):
        self.small, self.large = small, large
        self.model_pixel_size_A = float(model_pixel_size_A)
        self.from_grid_px = int(from_grid_px)
        self.last_timings_s: dict[str, float] = {}

    def choose(self, shape, pixel_size_A: float, model_pixel_size_A: float | None = None):
        """The inferencer for a frame of ``shape`` (rows, columns) at ``pixel_size_A`` (``small`` for an
        unusable pixel size: its ``predict`` reports it, as without the router)."""
        from engine.infer.preprocess import grid_shape

        if not float(pixel_size_A) > 0:
            return self.small
        h, w = grid_shape(tuple(shape), float(pixel_size_A), float(model_pixel_size_A or self.model_pixel_size_A))
        return self.large if h * w >= self.from_grid_px else self.small

    def predict(self, image, pixel_size_A: float, model_pixel_size_A: float | None = None):
        inf = self.choose(np.shape(image)[:2], pixel_size_A, model_pixel_size_A)
        self.last_timings_s = {}
        out = (inf.predict(image, pixel_size_A) if model_pixel_size_A is None else
               inf.predict(image, pixel_size_A, model_pixel_size_A=model_pixel_size_A))
        self.last_timings_s = dict(getattr(inf, "last_timings_s", None) or {})
        return out

    def atoms_for(self, probs):
        """The atoms found with ``probs`` by whichever inferencer ran it (None where none did)."""
        for inf in (self.small, self.large):
            f = getattr(inf, "atoms_for", None)
            atoms = f(probs) if f is not None else None
            if atoms is not None:
                return atoms
        return None

    def close(self) -> None:
        self.small.close()


def network_for_overlap(pipe):
    """An inferencer of its own for the network thread, or None to use the pipeline's.

    When the pipeline's network is ONNX Runtime on the CPU with the default thread count (all
    physical cores), the network thread gets a session with one thread fewer: the other core runs
    the chemistry and tracking of the frame before, instead of the two stages (and ONNX Runtime's
    spinning pool threads) fighting over every core. Frames whose model grid has at least
    :data:`ALL_CORES_FROM_GRID_PX` pixels (:data:`ALL_CORES_FROM_GRID_PX_INT8` for the INT8 network)
    still run on the pipeline's session (every core): :class:`GridRouted`. The same model file; ONNX
    Runtime's CPU kernels give the same numbers at any thread count (tests/test_pipeline_overlap.py
    compares the outputs byte for byte). A configured ``inference.threads`` is kept as it is."""
    inf = getattr(pipe, "inferencer", None)
    cfg = getattr(pipe, "cfg", None)
    if cfg is None or cfg.inference.threads is not None or getattr(inf, "backend_name", None) != "onnxruntime":
        return None
    from engine.infer.backends import physical_cores

    n = physical_cores()
    if n < 2:
        return None
    from engine.infer import Inferencer

    try:
        own = Inferencer(dataclasses.replace(cfg.inference, backend="onnx", threads=n - 1))
    except Exception as exc:  # the pipeline's own network still works: use it
        log.warning("no separate network session for the overlap (%s): using the pipeline's", exc)
        return None
    same = (getattr(own, "backend_name", None) == "onnxruntime"
            and str(getattr(own.backend, "model_path", "a")) == str(getattr(inf.backend, "model_path", "b")))
    if not same:
        own.close()
        return None
    from_px = ALL_CORES_FROM_GRID_PX_INT8 if getattr(inf, "precision", "fp32") == "int8" else ALL_CORES_FROM_GRID_PX
    model_ps = float(getattr(inf, "model_pixel_size_A", 0.2) or 0.2)
    small = own
    if getattr(cfg.pipeline, "network_process", "off") == "auto" and process_available():
        from engine.infer.process import ProcessInferencer

        # the smallest grids: the network in a child process (started on the first such frame), the
        # thread's own session as its fallback and for the grids between
        small = ProcessInferencer(own.cfg, fallback=own, below_grid_px=PROCESS_BELOW_GRID_PX, chemistry=cfg.chemistry)
    return GridRouted(small, inf, model_ps, from_grid_px=from_px)


#: model-grid pixels below which the overlapped network runs in a process of its own
#: (:mod:`engine.infer.process`): there the network's own Python (~0.5 ms a frame) held the GIL that
#: the chemistry and tracking of the frame before need, and the child finds the atoms too. 256^2 frames
#: at 0.1 A/px (a 128^2 grid) went from 141 to 164.5 frames/s; 512^2 (a 256^2 grid) would lose 66 -> 53
#: (the child's one core runs its network and atoms: the bottleneck), so they stay on the thread
PROCESS_BELOW_GRID_PX = 192 * 192


def process_available() -> bool:
    """Whether the network process can be used here: POSIX (a socket pair passed to the child by its
    file descriptor)."""
    return os.name == "posix"


def wants_network(health) -> bool:
    """Whether :func:`engine.pipeline.analyze_frame` will run the network on a frame of this health
    (ignoring the material check, which skips it on frames that are not graphene: then the network
    run ahead is wasted, not wrong)."""
    if health is None:
        return False
    ps = float(health.pixel_size_A)
    return not (set(health.verdicts) & SKIP_VERDICTS) and bool(np.isfinite(ps) and ps > 0)


@dataclass
class Done:
    """A finished frame: the frame, its :class:`engine.types.FrameResult` and the ``t_start`` it was
    pushed with."""

    frame: Any
    result: Any
    t_start: float | None = None


class Overlap:
    """Frames through ``pipe`` (an :class:`engine.pipeline.Pipeline`), the network of each frame
    started when it is pushed and the frame finished when the next one is pushed (or on
    :meth:`flush`). ``enabled=False``: :meth:`push` processes the frame at once (no thread).

    Only the thread that pushes uses ``pipe``; :meth:`close` ends the network thread (a frame still
    held is dropped: :meth:`flush` first). A stand-in pipeline with only ``process(frame, t_start)``
    (no ``check``, ``may_check_ahead``, ``inferencer``) is run frame by frame."""

    def __init__(self, pipe, enabled: bool = True, close_timeout_s: float = CLOSE_TIMEOUT_S):
        self.pipe = pipe
        self.enabled = bool(enabled) and all(hasattr(pipe, a) for a in ("check", "may_check_ahead", "inferencer"))
        self.close_timeout_s = float(close_timeout_s)
        self._stage: InferenceStage | None = None
        self._inf: AheadInferencer | None = None
        self._held: tuple | None = None               # (frame, t_start, checked)
        self._own = None                              # the network thread's own inferencer (network_for_overlap)

    def start(self) -> "Overlap":
        if self.enabled and self._stage is None:
            kept = getattr(self.pipe, "overlap_network", None)      # the pipeline keeps it (and closes it)
            self._own = network_for_overlap(self.pipe) if kept is None else None
            net = kept() if kept is not None else self._own
            self._stage = InferenceStage(net if net is not None else self.pipe.inferencer).start()
            self._inf = AheadInferencer(self._stage)
        return self

    @property
    def pending(self) -> bool:
        """A frame is held (its network may be running): :meth:`flush` finishes it."""
        return self._held is not None

    @property
    def held_frame(self):
        """The frame held (None when there is none)."""
        return self._held[0] if self._held is not None else None

    def push(self, frame, t_start: float | None = None) -> Done | None:
        """Take ``frame``; returns the frame finished now (the one pushed before), or None."""
        if not self.enabled:
            return Done(frame, self.pipe.process(frame, t_start=t_start), t_start)
        if self._stage is None:
            self.start()
        done = None
        if self._held is not None and not self.pipe.may_check_ahead(frame):
            done = self.flush()                # a new series or frame shape: finish in order first
        checked = self.pipe.check(frame)
        if wants_network(checked[0]):
            self._inf.start(frame.data, checked[0].pixel_size_A)
        if self._held is not None:
            done = self.flush()
        self._held = (frame, t_start, checked)
        return done

    def flush(self) -> Done | None:
        """Finish the held frame (None when there is none)."""
        if self._held is None:
            return None
        frame, t_start, checked = self._held
        self._held = None
        return Done(frame, self.pipe.process(frame, t_start=t_start, checked=checked, inferencer=self._inf),
                    t_start)

    def close(self, timeout_s: float | None = None) -> bool:
        """End the network thread; False when it did not stop within ``timeout_s`` (then do not close
        the pipeline's inferencer under it)."""
        self._held = None
        if self._stage is None:
            return True
        ok = self._stage.close(self.close_timeout_s if timeout_s is None else timeout_s)
        if ok and self._own is not None:
            self._own.close()
        self._stage = self._inf = self._own = None
        return ok

    def __enter__(self) -> "Overlap":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
