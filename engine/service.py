"""The live service: frames from the microscope -> Pipeline on its own thread -> events on a
ZeroMQ PUB socket, listeners (the dashboard), status, recording on demand.

Threads (all owned here or by the receiver):

* the receiver's I/O thread drains the frame socket at all times and keeps only the newest frame
  for analysis (older ones are dropped and counted); it also feeds the recorder queue;
* the receiver's recorder thread writes every message to the current recording, if any
  (:meth:`LiveService.start_recording` / :meth:`LiveService.stop_recording` switch files while live);
* the analysis thread takes the newest frame, runs :class:`engine.pipeline.Pipeline`, publishes the
  events and calls the listeners ``fn(result, status)`` (they must return at once; the dashboard
  only appends to a bounded deque);
* with ``Config.pipeline.overlap`` on, the network thread of :mod:`engine.overlap` runs the network
  of the newest frame while the analysis thread finishes the one before (while the next frame is
  already waiting, or due soon on a stream faster than frame-by-frame analysis:
  :func:`hold_for_next_s`; results and their order unchanged).

Events socket (docs/tracking.md): PUB, bound at ``events_endpoint``; each event is a two-part
message ``[b"event", msgpack map]`` with the :class:`engine.types.Event` fields plus ``version``,
``type="event"`` and ``series``. Latencies in status and events are measured from the frame's
``t_acquired`` (the acquisition PC's clock: keep the clocks in sync, e.g. NTP).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.pipeline import Pipeline
from engine.types import FrameResult
from stemwatch.config import Config, EventConfig

log = logging.getLogger(__name__)

EVENTS_PROTOCOL_VERSION = 2     # 2: events carry `category` (and rotor angles); see docs/protocol.md
EVENT_TOPIC = b"event"
#: latency stages, cumulative from t_acquired (seconds)
LATENCY_STAGES = ("received", "started", "network", "atoms_graph", "tracking", "published")
#: frames arriving more than this long after their t_acquired: latencies are measured from arrival
CLOCK_OFFSET_LIMIT_S = 30.0
#: how long :meth:`LiveService.stop` waits for each thread before abandoning it
STOP_TIMEOUT_S = 10.0
#: the next frame is waited for (so its network runs while this one's chemistry does) only when the
#: stream's period is below this multiple of one frame's sequential analysis time: from ~91 % of
#: frame-by-frame capacity on, where jitter already queues frames and the newest-frame policy drops some
#: (512^2 at 42 Hz, ~22 ms a frame frame by frame: 0.8 held no frame, 38.2-38.8 frames/s analysed, 22-25
#: of 336 dropped, p99 54 ms; 1.1: 41.9 frames/s, none dropped, p99 43-44 ms; interleaved, idle)
HOLD_COST_RATIO = 1.1
#: ... and for at most this many frame periods after the held frame arrived, and never longer than
#: MAX_HOLD_S
HOLD_PERIODS = 1.25
MAX_HOLD_S = 0.25


def hold_for_next_s(period_s: float, cost_s: float, since_arrival_s: float) -> float:
    """How long the analysis thread waits for the next frame before finishing the held one alone.

    Overlap (engine.overlap) finishes a frame when the next one is pushed, so the network of the next
    runs beside this one's chemistry. Live, waiting for the next frame delays this one; it is worth it
    only when the stream is too fast to analyse frame by frame with a margin: ``period_s`` (the stream's
    frame period) below ``HOLD_COST_RATIO`` x ``cost_s`` (one frame's analysis time, stage by stage). Then
    the next frame is due about one period after this one arrived (``since_arrival_s`` ago): wait
    until ``HOLD_PERIODS`` periods have passed (at most ``MAX_HOLD_S``). Otherwise 0: a slow stream's
    frames are finished at once, at the lowest latency. Unknown (nan, 0) figures give 0."""
    if not (period_s > 0 and cost_s > 0) or not period_s < HOLD_COST_RATIO * cost_s:
        return 0.0
    return float(min(max(HOLD_PERIODS * period_s - since_arrival_s, 0.0), MAX_HOLD_S))


class SwitchableRecorder:
    """Recorder object given to the Receiver: writes to the current :class:`RecordingWriter` (if any).

    It remembers the newest ``start`` message so that a recording started mid-series begins with
    its series header. Called only from the receiver's recorder thread (``write``) and from control
    calls (``open``/``close``), under a lock.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.writer = None
        self.path: str | None = None
        self.error: str | None = None
        self.written = 0
        self.last_start: tuple[list, float] | None = None

    def write(self, parts, t_arrival: float) -> None:
        head = bytes(getattr(parts[0], "buffer", parts[0])) if len(parts) == 1 else None
        if head is not None:
            try:
                import msgpack

                h = msgpack.unpackb(head, raw=False)
                if isinstance(h, dict) and h.get("type") == "start":
                    self.last_start = ([head], t_arrival)
            except Exception:  # not ours to judge: the receiver already validated it
                pass
        with self._lock:
            if self.writer is None:
                return
            try:
                self.writer.write(parts, t_arrival)
                self.written += 1
            except Exception as exc:      # disk full, I/O error: stop this recording, keep analysing
                self.error = str(exc) or type(exc).__name__
                log.error("recording %s stopped: %s", self.path, self.error)
                self._close_locked()

    def open(self, path: str | Path, append: bool = False, overwrite: bool = False) -> None:
        from streamer.recording import RecordingWriter

        with self._lock:
            self._close_locked()
            self.writer = RecordingWriter(path, append=append, overwrite=overwrite)
            self.path, self.error, self.written = str(path), None, 0
            if self.last_start is not None:
                parts, t = self.last_start
                self.writer.write(parts, t)
                self.written += 1

    def _close_locked(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception as exc:
                self.error = self.error or str(exc)
            self.writer = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    @property
    def recording(self) -> bool:
        return self.writer is not None


class LiveService:
    """Live analysis of a frame stream (see the module docstring).

    cfg : :class:`stemwatch.config.Config`. endpoint : the frame socket (connect by default;
    ``bind=True`` to bind). record_path : start recording there at :meth:`start`.
    events_endpoint : where to bind the events PUB socket (None: no socket).
    pipeline : an existing :class:`Pipeline` (default: a new one on ``cfg``, image kept for display).
    socket_type, curve : passed to :class:`streamer.Receiver`.
    dose_e_per_A2 : electron dose per frame for the dopant statistics (:attr:`stats`, an
    :class:`engine.stats_live.LiveStats`); default: each series' start metadata.
    source : any :class:`streamer.source.FrameSource` instead of the socket (default: a
    :class:`streamer.source.ReceiverSource` on ``endpoint`` that feeds the recorder); the service
    stops analysing when a finite source is exhausted.
    """

    def __init__(self, cfg: Config | None = None, endpoint: str = "tcp://127.0.0.1:5555",
                 record_path: str | Path | None = None, events_endpoint: str | None = None,
                 bind: bool = False, pipeline: Pipeline | None = None, socket_type: str = "PULL",
                 curve: Any = None, events_curve: Any = None, dose_e_per_A2: float | None = None,
                 source: Any = None, record_mode: str = "new", recordings_dir: str | Path = "recordings"):
        import zmq

        from streamer.source import ReceiverSource

        self.cfg = cfg or Config()
        self.endpoint = endpoint
        self.pipeline = pipeline if pipeline is not None else Pipeline(self.cfg, keep_image=True)
        self.recorder = SwitchableRecorder()
        self.source = source if source is not None else ReceiverSource(
            endpoint, self.cfg.stream, bind=bind, recorder=self.recorder, socket_type=socket_type, curve=curve)
        self.receiver = getattr(self.source, "receiver", None)     # the socket's counters, when there is one
        self._record_path = record_path
        if record_mode not in ("new", "append", "overwrite"):
            raise ValueError(f"record_mode must be new, append or overwrite, got {record_mode!r}")
        self._record_mode = record_mode
        self.recordings_dir = Path(recordings_dir)
        self._ctx = None
        self._pub = None
        self._pub_auth = None
        self.events_endpoint = None
        if events_endpoint:
            self._ctx = zmq.Context()
            self._pub = self._ctx.socket(zmq.PUB)
            self._pub.linger = 0
            self._pub.sndhwm = 10000
            if events_curve is not None:
                from streamer.security import apply_curve

                self._pub_auth = apply_curve(self._ctx, self._pub, events_curve, server=True)
            self._pub.bind(events_endpoint)
            self.events_endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._listeners: list[Callable] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._paused = False
        self._pending_events_cfg: EventConfig | None = None
        self._pending_chem: dict | None = None
        self._thread: threading.Thread | None = None
        self._done_times: collections.deque = collections.deque(maxlen=64)
        self._lat: dict[str, collections.deque] = {s: collections.deque(maxlen=1000) for s in LATENCY_STAGES}
        self._health_counts: dict = {}
        self._last_health: dict | None = None
        self._health_published: tuple | None = None
        self._n = {"analysed": 0, "paused_skipped": 0, "errors": 0, "events": 0, "listener_errors": 0,
                   "events_published": 0}
        self._last_error: str | None = None
        self._last_result: FrameResult | None = None
        self._clock_offset_s = 0.0
        self._period_s = float("nan")         # the stream's frame period, running estimate (_observe_timing)
        self._cost_s = float("nan")           # one frame's sequential analysis time, running estimate
        self._last_arrival: tuple | None = None
        self._overlap_stopped = True          # False: the network thread did not stop (engine.overlap)
        from engine.stats_live import LiveStats

        self.stats = LiveStats(dose_e_per_A2)          # dopant statistics of the current series (engine.stats)

    # ------------------------------------------------------------------------------ life cycle
    def start(self) -> "LiveService":
        if self._thread is not None:
            return self
        if self._record_path:                 # before the first message can arrive: nothing received goes unrecorded
            self.start_recording(self._record_path, append=self._record_mode == "append",
                                 overwrite=self._record_mode == "overwrite")
        self.source.open()
        self._thread = threading.Thread(target=self._loop, name="stemwatch-analysis", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop analysing, stop receiving (the recorder writes what is queued), close everything.

        Never hangs: the analysis thread gets ``timeout_s`` to finish its frame; a backend stuck in
        a call is then abandoned (logged, the thread is a daemon, the backend is not closed under
        it), and the receiver's threads get their own timeouts. Default: :data:`STOP_TIMEOUT_S`."""
        timeout_s = STOP_TIMEOUT_S if timeout_s is None else float(timeout_s)
        self._stop.set()
        hung = False
        if self._thread is not None:
            self._thread.join(timeout_s)
            hung = self._thread.is_alive()
            if hung:
                log.error("the analysis thread did not stop within %.0f s (a backend call hung?): abandoned",
                          timeout_s)
        self.source.close(timeout_s=timeout_s)
        self.recorder.close()
        if self._pub is not None:
            self._pub.close(0)
            self._pub = None
        if self._pub_auth is not None:
            self._pub_auth.stop()
            self._pub_auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if not hung and self._overlap_stopped:
            self.pipeline.close()

    def __enter__(self) -> "LiveService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ controls
    def add_listener(self, fn: Callable[[FrameResult, dict], Any]) -> None:
        """Call ``fn(result, status)`` after every analysed frame, on the analysis thread. It must
        return at once (hand the data to another thread); exceptions are logged and counted."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def set_paused(self, paused: bool) -> None:
        """Pause / resume analysis. Receiving and recording go on; frames are skipped and counted."""
        self._paused = bool(paused)

    @property
    def paused(self) -> bool:
        return self._paused

    def start_recording(self, path: str | Path, append: bool = False, overwrite: bool = False) -> str:
        """Record every message from now on to ``path`` (a new file unless ``append``/``overwrite``:
        an existing file is refused; the series' start message first)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.recorder.open(path, append=append, overwrite=overwrite)
        log.info("recording to %s", path)
        return str(path)

    def start_take(self, name: str | None = None) -> str:
        """Start a recording for the dashboard's Record control: always a new file inside
        :attr:`recordings_dir` (``name``: a plain file name, or None for a time-stamped one; an
        existing name gets ``-2``, ``-3``...). Returns the path. ValueError for a name with a path."""
        from streamer.recording import RecordingExistsError, take_path

        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(100):               # a take appearing meanwhile: the next free name
            path = take_path(self.recordings_dir, name)
            try:
                return self.start_recording(path)
            except RecordingExistsError:
                continue
        raise RuntimeError(f"no free recording name in {self.recordings_dir}")

    def stop_recording(self) -> None:
        self.recorder.close()

    def update_config(self, events: dict | None = None, chemistry: dict | None = None, **kw) -> None:
        """Change thresholds while live: ``events={"k_of_n": (k, n), "min_confidence": c}`` (or
        ``k_of_n=..., min_confidence=...`` directly), ``chemistry={"prob_threshold": p, ...}``.
        Validated now (ValueError / TypeError), applied before the next frame."""
        ev = dict(events or {})
        for key in ("k_of_n", "min_confidence"):
            if key in kw:
                ev[key] = kw.pop(key)
        if kw:
            raise TypeError(f"unknown settings {sorted(kw)}: use events={{...}} or chemistry={{...}}")
        new_cfg = self.cfg
        if ev:
            if "k_of_n" in ev:
                k, n = (int(v) for v in ev["k_of_n"])
                ev["k_of_n"] = (k, n)
                if not 1 <= k <= n <= self.pipeline.tracker.ring_len:
                    raise ValueError(f"k_of_n must satisfy 1 <= k <= n <= {self.pipeline.tracker.ring_len}, "
                                     f"got {(k, n)}")
            if "min_confidence" in ev:
                c = float(ev["min_confidence"])
                if not 0.0 <= c <= 1.0:
                    raise ValueError(f"min_confidence must be in [0, 1], got {c}")
                ev["min_confidence"] = c
            new_cfg = new_cfg.replace(events=ev)
        if chemistry:
            new_cfg = new_cfg.replace(chemistry=dict(chemistry))
        with self._lock:
            self.cfg = new_cfg
            if ev:
                self._pending_events_cfg = new_cfg.events
            if chemistry:
                self._pending_chem = dict(chemistry)

    # ------------------------------------------------------------------------------ status
    def status(self) -> dict:
        """Plain-data snapshot (JSON-serialisable): rates, latencies from t_acquired, receiver counters,
        recorder, backend. Keys are documented in docs/tracking.md."""
        rx = self.receiver.stats() if self.receiver is not None else _stats_of(self.source.report())
        now = time.time()
        with self._lock:
            done = list(self._done_times)
            lat = {s: np.asarray(d, float) for s, d in self._lat.items()}
            n = dict(self._n)
            last_error = self._last_error
        fps = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        if done and now - done[-1] > 2.0:
            fps = 0.0
        from engine.chem.quantile import percentiles       # (np.percentile's overhead: 12 calls a frame)

        latency = {s: dict(zip(("p50", "p99"), percentiles(v, (50, 99)))) for s, v in lat.items() if len(v)}
        rec = self.recorder
        return {
            "endpoint": self.endpoint,
            "events_endpoint": self.events_endpoint,
            "series": rx["series"],
            "data_fps": rx["fps"],
            "analysed_fps": fps,
            "latency_s": latency,
            "clock_offset_s": self._clock_offset_s,
            "latency_reference": ("t_acquired" if not self._clock_offset_s else
                                  f"arrival (frames arrive {self._clock_offset_s:.0f} s after their t_acquired: "
                                  "a replay, or clocks out of sync)"),
            "frames_received": rx["frames_received"],
            "frames_analysed": n["analysed"],
            "dropped_for_analysis": rx["dropped_for_analysis"],
            "gap_count": rx["gap_count"], "gaps": rx["gaps"], "missing_frames": rx["missing_frames"],
            "stalls": rx["stalls"], "stalled": rx["stalled"],
            "malformed_total": rx["malformed_total"], "malformed": rx["malformed"],
            "backend": self.pipeline.backend_description,
            "paused": self._paused, "paused_skipped": n["paused_skipped"],
            "errors": n["errors"], "last_error": last_error,
            "events": n["events"], "events_published": n["events_published"],
            "listener_errors": n["listener_errors"],
            "tracks": self.pipeline.tracker.n_tracks,
            "config": {"k_of_n": list(self.cfg.events.k_of_n), "min_confidence": self.cfg.events.min_confidence},
            "recorder": {"recording": rec.recording, "path": rec.path, "written": rec.written,
                         "lost": rx["recorder"]["lost"], "backlog": rx["recorder"]["backlog"],
                         "backlog_bytes": rx["recorder"]["backlog_bytes"], "backlog_s": rx["recorder"].get("backlog_s"),
                         "error": rec.error or rx["recorder"]["error"]},
            "receiver": rx,
            "health": {"last": self._last_health, "counts": dict(self._health_counts)},
        }

    @property
    def last_result(self) -> FrameResult | None:
        return self._last_result

    # ------------------------------------------------------------------------------ analysis thread
    def _apply_pending(self) -> None:
        with self._lock:
            ev, chem = self._pending_events_cfg, self._pending_chem
            self._pending_events_cfg = self._pending_chem = None
        if ev is not None:
            self.pipeline.set_events(ev)
        if chem is not None:
            self.pipeline.cfg = self.pipeline.cfg.replace(chemistry=chem)

    def _loop(self) -> None:
        from engine.overlap import Overlap, overlap_enabled
        from streamer.source import SourceExhausted

        # the network of a frame runs while the one before is finished (engine.overlap); a frame is
        # held back while the next one is waiting, or due soon when the stream outpaces frame-by-frame
        # analysis (hold_for_next_s): never for throughput the stream does not need
        ov = Overlap(self.pipeline, overlap_enabled(self.cfg.pipeline.overlap)).start()
        try:
            while not self._stop.is_set():
                try:
                    frame = self.source.read(timeout_s=self._hold_s(ov.held_frame) if ov.pending else 0.1)
                except SourceExhausted:
                    break
                if frame is None or self._paused:
                    if ov.pending:
                        self._step(ov.flush)
                    if frame is not None:
                        with self._lock:
                            self._n["paused_skipped"] += 1
                    continue
                self._apply_pending()
                t_start = time.time()
                self._step(lambda: ov.push(frame, t_start=t_start))
            if ov.pending:
                self._step(ov.flush)
        finally:
            self._overlap_stopped = ov.close(STOP_TIMEOUT_S)

    def _hold_s(self, held) -> float:
        """:func:`hold_for_next_s` for the held frame, from the stream's period (frames received per
        second of ``t_received``, counted by ``seq`` so that dropped frames do not lengthen it) and
        the last analysed frame's stage times."""
        t = float(getattr(held, "t_received", 0.0) or 0.0)
        return hold_for_next_s(self._period_s, self._cost_s, time.time() - t) if t else 0.0

    def _observe_timing(self, frame, result) -> None:
        """Running estimates of the stream's frame period and of one frame's sequential analysis time."""
        t, seq = float(getattr(frame, "t_received", 0.0) or 0.0), int(getattr(frame, "seq", -1))
        prev = self._last_arrival
        if t and prev is not None and prev[2] == frame.series and seq > prev[1] and t > prev[0]:
            p = (t - prev[0]) / (seq - prev[1])
            self._period_s = p if not self._period_s > 0 else 0.8 * self._period_s + 0.2 * p
        self._last_arrival = (t, seq, frame.series) if t else None
        cost = sum(v for k, v in (result.timings_s or {}).items() if k not in ("total", "wait"))
        if cost > 0:
            self._cost_s = cost if not self._cost_s > 0 else 0.8 * self._cost_s + 0.2 * cost

    def _step(self, fn) -> None:
        """``fn()`` -> the :class:`engine.overlap.Done` frame (or None); account, publish, listeners."""
        try:
            done = fn()
        except Exception as exc:   # the pipeline reports stage errors itself; this is a last resort
            log.exception("analysis failed")
            with self._lock:
                self._n["errors"] += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            return
        if done is not None:
            self._observe_timing(done.frame, done.result)
            self._finished(done.frame, done.result, done.t_start)

    def _finished(self, frame, result: FrameResult, t_start: float) -> None:
        """One analysed frame: latencies, events out, statistics, listeners."""
        ta = self._account(frame, result, t_start)
        self._publish(result)
        with self._lock:
            self._lat["published"].append(time.time() - ta)
        try:
            self.stats.add(result, frame.meta)
        except Exception:          # statistics must never stop the analysis
            log.exception("dopant statistics failed on frame %s/%s", frame.series, frame.seq)
        status = self.status() if self._listeners else {}
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(result, status)
            except Exception:
                log.exception("listener %r failed", fn)
                with self._lock:
                    self._n["listener_errors"] += 1

    def _account(self, frame, r: FrameResult, t_start: float) -> float:
        # t_acquired comes from the acquisition PC's clock. When frames arrive more than
        # CLOCK_OFFSET_LIMIT_S "old" (a byte-exact replay, or clocks out of sync) latencies are
        # measured from the frame's arrival instead, and status says so.
        off = float(frame.t_received) - float(frame.t_acquired) if frame.t_received else 0.0
        self._clock_offset_s = off if abs(off) > CLOCK_OFFSET_LIMIT_S else 0.0
        ta = float(frame.t_acquired) + self._clock_offset_s
        extra = r.t_done - ta
        for e in r.events:                 # live: latency to the moment the event exists here
            e.latency_s = float(e.latency_s + extra)
        tm = r.timings_s
        stages = {"received": (float(frame.t_received) - ta) if frame.t_received else None, "started": t_start - ta}
        if not r.error:
            # counted back from the result's time: with the network run ahead (engine.overlap) a frame
            # also waits for the one before it, which its own stage times do not show
            end = r.t_done - ta
            for name, key in (("tracking", ("tracking",)), ("atoms_graph", ("atoms_graph",)),
                              ("network", ("preprocess", "network"))):
                stages[name] = end
                end -= sum(tm.get(k, 0.0) for k in key)
        with self._lock:
            self._n["analysed"] += 1
            self._n["events"] += len(r.events)
            if r.error:
                self._n["errors"] += 1
                self._last_error = r.error
            self._done_times.append(r.t_done)
            h = getattr(r, "health", None)
            if h is not None:
                self._health_counts[h.verdict] = self._health_counts.get(h.verdict, 0) + 1
                self._last_health = h.to_dict()
            for s, v in stages.items():
                if v is not None:
                    self._lat[s].append(v)
            self._last_result = r
        return ta

    def _publish(self, r: FrameResult) -> None:
        h = getattr(r, "health", None)
        key = (r.series, h.scale_source, h.pixel_size_A) if h is not None else None
        health_msg = h is not None and (not h.ok or key != self._health_published)
        if self._pub is None or not (r.events or health_msg):
            return
        import msgpack

        import zmq

        if health_msg:     # frames not ok, and the scale decision whenever it changes (type "health")
            self._health_published = key
            msg = {"version": EVENTS_PROTOCOL_VERSION, "type": "health", "series": r.series, "frame": int(r.seq),
                   "t_acquired": float(r.t_acquired), **h.to_dict()}
            try:
                self._pub.send_multipart([b"health", msgpack.packb(msg, use_bin_type=True)], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.warning("health message not published: %s", exc)

        for e in r.events:
            msg = {"version": EVENTS_PROTOCOL_VERSION, "type": "event", "series": r.series, **e.to_dict()}
            try:
                self._pub.send_multipart([EVENT_TOPIC, msgpack.packb(msg, use_bin_type=True)], zmq.NOBLOCK)
                with self._lock:
                    self._n["events_published"] += 1
            except zmq.ZMQError as exc:    # PUB never blocks; HWM reached drops (counted as not published)
                log.warning("event not published: %s", exc)


def _stats_of(rep) -> dict:
    """Receiver-like counters from a :class:`streamer.source.SourceReport` (a source without a socket)."""
    return {"series": rep.series[-1] if rep.series else None, "fps": 0.0, "frames_received": rep.frames,
            "dropped_for_analysis": rep.dropped, "gap_count": len(rep.gaps), "gaps": rep.gaps,
            "missing_frames": rep.missing_frames, "stalls": 0, "stalled": False,
            "malformed_total": rep.malformed, "malformed": {},
            "recorder": {"lost": 0, "backlog": 0, "backlog_bytes": 0, "backlog_s": 0.0, "error": None},
            "source": rep.to_dict()}
