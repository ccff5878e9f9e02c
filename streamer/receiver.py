"""``Receiver``: the analysis-PC end of the frame socket. It never stalls the microscope.

An I/O thread drains the socket at all times and decodes every message (protocol v1). It hands

- **analysis** the newest frame through a one-slot mailbox (:meth:`Receiver.latest`): a frame that
  is replaced before analysis took it is dropped and counted (``dropped_for_analysis``);
- **the recorder** every accepted message through a bounded queue (frames and bytes); if the
  recorder falls behind and the queue is full the message is lost *to the recorder only*, and that
  is counted (``recorder.lost``), never silent. With ``StreamConfig.recorder_policy="block"`` the
  I/O thread instead waits for room (lossless recording; a PUSH publisher is then slowed to the
  disk's speed, and the time spent waiting is counted in ``recorder.blocked_s``). In that mode
  what the process holds is bounded in bytes by ``StreamConfig.recorder_max_buffer_bytes``
  (:class:`LosslessBudget`): the queue counts a message until it is written, the I/O thread stops
  reading the socket while the queue has no room, and libzmq's receive mark is sized from the
  budget (docs/recording.md). Lossless mode is refused over ``ipc://`` (libzmq issue #4660).

It tracks series (start/end, new series without an end, publisher restarts), sequence gaps (exact
seq ranges), stalls (no frame for ``stall_timeout_s`` while a series is open), malformed
messages by reason, and connection events (peers connected/disconnected, failed CURVE
handshakes). A frame larger than ``max_frame_bytes`` is refused and counted
(``frame_too_large``); the link stays up. libzmq itself refuses a message part larger than
:func:`socket_limit_bytes` (``ZMQ_MAXMSGSIZE``, 4 x ``max_frame_bytes``), so no sender can make
the receiver allocate more per part; such a peer is disconnected (``peer_disconnects``) and a
connecting receiver reconnects at once (``reconnects``; libzmq would not: it treats it as a
protocol error and gives up). Malformed and
stale-series messages are counted and skipped: they never reach analysis or the recording.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import numpy as np
import zmq

from stemwatch.config import StreamConfig
from streamer.frame import Frame
from streamer.lossless import LosslessBudget, RecorderQueue, check_lossless_endpoint, lossless_budget, socket_limit_bytes
from streamer.protocol import ProtocolError, decode
from streamer.security import Curve, apply_curve

log = logging.getLogger(__name__)

_RECONNECT_GRACE_S = 0.5     # a disconnect libzmq does not follow up within this is re-connected here
_STALE_MEMORY = 256          # how many previous series ids are remembered as stale


class Receiver:
    """Receive frames from a :class:`streamer.Publisher` (or anything speaking protocol v1).

    endpoint : ZeroMQ endpoint; ``bind=False`` (default) connects to the acquisition PC.
    cfg : :class:`stemwatch.config.StreamConfig` (limits, queue sizes, stall timeout).
    recorder : optional object with ``write(parts, t_arrival)`` (a
        :class:`streamer.recording.RecordingWriter`); the caller owns and closes it after
        :meth:`stop`, which first writes everything still queued.
    socket_type : ``PULL`` (default, pairs with PUSH) or ``SUB`` (pairs with PUB).
    curve : optional :class:`streamer.security.Curve`.

    Use as a context manager (``start``/``stop``)::

        with Receiver("tcp://acq-pc:5555", StreamConfig()) as rx:
            while True:
                frame = rx.latest(timeout_s=1.0)
    """

    def __init__(self, endpoint: str, cfg: StreamConfig | None = None, bind: bool = False,
                 recorder: Any = None, socket_type: str = "PULL", curve: Curve | None = None):
        self.cfg = cfg or StreamConfig()
        if self.cfg.recorder_policy not in ("drop", "block"):
            raise ValueError(f"recorder_policy must be 'drop' or 'block', got {self.cfg.recorder_policy!r}")
        socket_type = socket_type.upper()
        if socket_type not in ("PULL", "SUB"):
            raise ValueError(f"socket_type must be PULL or SUB, got {socket_type!r}")
        #: lossless mode's byte budget (:class:`LosslessBudget`); None in "drop" mode or without a recorder
        self.budget = (lossless_budget(self.cfg) if self.cfg.recorder_policy == "block" and recorder is not None
                       else None)
        if self.budget is not None:
            check_lossless_endpoint(endpoint)
        self._hwm = self.socket_hwm(self.cfg, self.budget, endpoint)   # receive high-water mark (messages)
        self._msg_bytes: int | None = None     # lossless: the message size expected (announced or seen)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL if socket_type == "PULL" else zmq.SUB)
        self._auth = None
        try:
            self._sock.rcvhwm = self._hwm
            self._sock.linger = 0
            # libzmq drops (and disconnects) a peer sending a larger part: a hostile or broken
            # sender can never make us allocate more than this per message part.
            self._sock.maxmsgsize = socket_limit_bytes(self.cfg.max_frame_bytes)
            if socket_type == "SUB":
                self._sock.setsockopt(zmq.SUBSCRIBE, b"")
            self._auth = apply_curve(self._ctx, self._sock, curve, server=bind)
            # connection events (peers connecting, disconnecting, failing the CURVE handshake); the
            # monitor is attached before bind/connect: a handshake that completes first would go uncounted
            self._mon = self._sock.get_monitor_socket(
                zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECT_DELAYED)
            if bind:
                self._sock.bind(endpoint)
            else:
                self._sock.connect(endpoint)
        except Exception:
            mon = getattr(self, "_mon", None)
            if mon is not None:
                self._sock.disable_monitor()
                mon.close(0)
            self._sock.close(0)
            if self._auth is not None:
                self._auth.stop()
            self._ctx.term()
            raise
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
        self._bind = bool(bind)
        self._connect_endpoint = None if bind else endpoint
        self._reconnect_due: float | None = None    # see _drain_monitor
        self.recorder = recorder
        self._lock = threading.Lock()
        self._slot_cond = threading.Condition(self._lock)
        self._slot: Frame | None = None
        self._stop = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._rec_thread: threading.Thread | None = None
        self._rq = RecorderQueue(self.cfg.recorder_queue_frames,
                                  self.budget.queue_bytes if self.budget else self.cfg.recorder_queue_bytes)
        # state (written by the I/O thread under self._lock)
        self._open: str | None = None           # the open series
        self._open_header: dict | None = None
        self._open_meta: dict = {}
        self._expected: int | None = None       # next expected seq in the open series
        self._run = 0                           # number of series starts seen (Frame.run)
        self._last_series: str | None = None
        self._stale: collections.OrderedDict = collections.OrderedDict()
        self._last_frame_mono: float | None = None
        self._stalled = False
        self._recent = collections.deque(maxlen=64)
        self._s = {
            "messages": 0, "frames_received": 0, "delivered_for_analysis": 0, "dropped_for_analysis": 0,
            "gaps": collections.deque(maxlen=self.cfg.max_gaps_kept), "gap_count": 0, "missing_frames": 0,
            "series_started": 0, "series_changes": 0, "series_ended": 0, "series_aborted": 0,
            "implicit_starts": 0, "restarts": 0, "seq_rewinds": 0, "stalls": 0, "heartbeats": 0,
            "malformed": collections.Counter(),
            "rec_written": 0, "rec_lost": 0, "rec_error": None, "rec_blocked_s": 0.0,
            "peers_connected": 0, "peer_disconnects": 0, "handshake_failures": 0, "reconnects": 0,
        }

    # ------------------------------------------------------------------------------- life cycle
    def start(self) -> "Receiver":
        """Start the I/O thread (and the recorder thread if a recorder was given)."""
        if self._io_thread is not None:
            return self
        if self.recorder is not None:
            self._rec_thread = threading.Thread(target=self._record_loop, name="stemwatch-recorder", daemon=True)
            self._rec_thread.start()
        self._io_thread = threading.Thread(target=self._io_loop, name="stemwatch-receiver", daemon=True)
        self._io_thread.start()
        return self

    def stop(self, drain_recorder: bool = True, timeout_s: float = 10.0,
             drain_timeout_s: float = 120.0) -> None:
        """Stop receiving, let the recorder write what is queued (unless ``drain_recorder`` is
        False; at most ``drain_timeout_s``, then what is left is counted as lost), close the socket.
        Never waits forever for a thread (``timeout_s`` for the I/O thread). Safe to call twice."""
        self._stop.set()
        if self._io_thread is not None:
            self._io_thread.join(timeout_s)
            if self._io_thread.is_alive():
                log.error("the receiver's I/O thread did not stop within %.0f s", timeout_s)
        if not drain_recorder:
            lost = self._rq.clear()
            with self._lock:
                self._s["rec_lost"] += lost
        self._rq.close()
        if self._rec_thread is not None:
            self._rec_thread.join(drain_timeout_s)
            if self._rec_thread.is_alive():          # a stuck disk: give up on the rest, count it
                lost = self._rq.clear()
                with self._lock:
                    self._s["rec_lost"] += lost
                log.error("the recorder did not finish within %.0f s: %d queued message(s) lost",
                          drain_timeout_s, lost)
        with self._slot_cond:
            self._slot_cond.notify_all()
        if not self._sock.closed:
            self._sock.disable_monitor()
            self._mon.close(0)
            self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if not self._ctx.closed:
            self._ctx.term()

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------- analysis side
    def latest(self, timeout_s: float | None = None) -> Frame | None:
        """The newest frame not yet handed out, waiting up to ``timeout_s`` (None: forever) for
        one; None on timeout or after :meth:`stop`. Frames replaced before being taken are
        dropped and counted. ``frame.data`` is read-only."""
        with self._slot_cond:
            if self._slot is None:
                self._slot_cond.wait_for(lambda: self._slot is not None or self._stop.is_set(), timeout_s)
            frame, self._slot = self._slot, None
            if frame is not None:
                self._s["delivered_for_analysis"] += 1
            return frame

    def series_info(self) -> dict | None:
        """The ``start`` header of the open series (None if none is open or it started implicitly)."""
        with self._lock:
            return dict(self._open_header) if self._open_header else None

    def stats(self) -> dict:
        """A snapshot of the counters (plain data, JSON-serialisable)."""
        with self._lock:
            s = self._s
            now_mono = time.monotonic()
            recent = list(self._recent)
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
            if recent and now_mono - recent[-1] > 2.0:
                fps = 0.0
            out = {
                "messages": s["messages"], "frames_received": s["frames_received"],
                "delivered_for_analysis": s["delivered_for_analysis"],
                "dropped_for_analysis": s["dropped_for_analysis"],
                "gaps": [list(g) for g in s["gaps"]], "gap_count": s["gap_count"],
                "missing_frames": s["missing_frames"],
                "series": self._open, "series_started": s["series_started"],
                "series_changes": s["series_changes"], "series_ended": s["series_ended"],
                "series_aborted": s["series_aborted"], "implicit_starts": s["implicit_starts"],
                "restarts": s["restarts"], "seq_rewinds": s["seq_rewinds"],
                "stalls": s["stalls"], "stalled": self._stalled, "heartbeats": s["heartbeats"],
                "malformed": dict(s["malformed"]), "malformed_total": sum(s["malformed"].values()),
                "fps": fps,
                "peers_connected": s["peers_connected"], "peer_disconnects": s["peer_disconnects"],
                "handshake_failures": s["handshake_failures"], "reconnects": s["reconnects"],
                "last_frame_age_s": None if self._last_frame_mono is None else now_mono - self._last_frame_mono,
                "recorder": {
                    "enabled": self.recorder is not None, "written": s["rec_written"],
                    "backlog": len(self._rq.items), "backlog_bytes": self._rq.nbytes,
                    "backlog_s": self._backlog_age_s(),
                    "lost": s["rec_lost"], "error": s["rec_error"], "policy": self.cfg.recorder_policy,
                    "blocked_s": s["rec_blocked_s"],
                    "peak_bytes": self._rq.peak_bytes, "queue_limit_bytes": self._rq.max_bytes,
                    "max_buffer_bytes": self.budget.total_bytes if self.budget else None,
                    "socket_hwm": self._hwm,
                },
            }
        return out

    def _backlog_age_s(self) -> float:
        """How far behind the recorder is: seconds since the oldest queued message arrived (0: none)."""
        try:
            return max(0.0, time.time() - self._rq.items[0][1]) if self._rq.items else 0.0
        except IndexError:                 # taken by the recorder thread meanwhile
            return 0.0

    # ------------------------------------------------------------------------------- I/O thread
    def _io_loop(self) -> None:
        sock = self._sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._mon, zmq.POLLIN)
        timeout_ms = max(1, int(self.cfg.poll_interval_s * 1000))
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(timeout_ms))
            except zmq.ZMQError as exc:  # context terminated under us
                log.error("receiver poll failed: %s", exc)
                break
            if self._mon in ready:
                self._drain_monitor()
            if sock in ready:
                self._drain_socket()
            self._maybe_reconnect()
            self._check_stall()

    def _drain_socket(self) -> None:
        sock = self._sock
        for _ in range(10_000):          # drain, but look at the stop flag now and then
            if self.budget is not None and not self._wait_room():
                break
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                self._handle(parts, time.time())
            except Exception:            # never let one message kill the I/O thread
                log.exception("unexpected error handling a message")
                with self._lock:
                    self._s["malformed"]["internal_error"] += 1

    # ------------------------------------------------------------------------------- lossless byte budget
    @staticmethod
    def socket_hwm(cfg: StreamConfig, budget: LosslessBudget | None, endpoint: str) -> int:
        """The receive high-water mark (messages), fixed when the socket is made: ``cfg.rcvhwm``;
        in lossless mode as many of the largest messages the socket accepts as fit in
        ``budget.socket_bytes`` (at least 1), so libzmq's queue is bounded in bytes whatever the
        frame size. (It is never changed on a connected socket: libzmq can wedge a pipe whose mark
        is lowered while messages are in flight.) Lossless mode is refused over ``ipc://``
        (:class:`LosslessTransportError`)."""
        hwm = int(cfg.rcvhwm)
        if budget is None:
            return hwm
        by_bytes = max(1, budget.socket_bytes // budget.message_max_bytes)
        return by_bytes if hwm <= 0 else min(hwm, by_bytes)

    def _expect(self, nbytes: int, announced: bool = False) -> None:
        """Lossless mode: messages of ``nbytes`` are coming (a ``start`` announces its frames' size
        and resets the expectation; any larger message raises it at once)."""
        if self.budget is not None and (announced or self._msg_bytes is None or nbytes > self._msg_bytes):
            self._msg_bytes = int(nbytes)

    def _wait_room(self) -> bool:
        """Lossless mode, before taking a message off the socket: wait until the recorder queue
        has room for one of the expected size. Meanwhile nothing is read, so libzmq's queue fills
        to its mark and back-pressures TCP and the PUSH sender. False when stopping."""
        need = self._msg_bytes or 0
        if self._rq.wait_room(need, 0):
            return True
        t0 = time.monotonic()
        try:
            while not self._rq.wait_room(need, 0.1):
                if self._stop.is_set() or self._rq.closed:
                    return False
            return True
        finally:
            with self._lock:
                self._s["rec_blocked_s"] += time.monotonic() - t0

    def _drain_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        disconnected = False
        while True:
            try:
                ev = recv_monitor_message(self._mon, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            except Exception:              # a malformed monitor message: ignore it
                break
            with self._lock:
                if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._s["peers_connected"] += 1
                elif ev == zmq.EVENT_DISCONNECTED:
                    self._s["peer_disconnects"] += 1
                    disconnected = True
                elif ev in (zmq.EVENT_CONNECT_RETRIED, zmq.EVENT_CONNECT_DELAYED, zmq.EVENT_CONNECTED):
                    self._reconnect_due = None     # libzmq is reconnecting by itself
                elif ev in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                    self._s["handshake_failures"] += 1
        if disconnected and self._connect_endpoint is not None:
            # libzmq reconnects after a network error (and says so with CONNECT_RETRIED/DELAYED
            # events) but not after a protocol error: if it stays silent, reconnect ourselves.
            self._reconnect_due = time.monotonic() + _RECONNECT_GRACE_S

    def _maybe_reconnect(self) -> None:
        if self._reconnect_due is None or time.monotonic() < self._reconnect_due:
            return
        self._reconnect_due = None
        self._drain_socket()               # messages already received are kept, not dropped
        self._reconnect()

    def _reconnect(self) -> None:
        """Connect again after a disconnect. libzmq reconnects by itself after a network error but
        gives up for good after a protocol error (e.g. a part above ``ZMQ_MAXMSGSIZE``): one
        oversized message would end the link. Connecting anew is harmless when libzmq already
        reconnects (the old attempt is dropped first)."""
        ep = self._connect_endpoint
        try:
            self._sock.disconnect(ep)
        except zmq.ZMQError:
            pass                           # already gone: libzmq terminated the session
        try:
            self._sock.connect(ep)
        except zmq.ZMQError as exc:
            log.error("reconnecting to %s failed: %s", ep, exc)
            return
        with self._lock:
            self._s["reconnects"] += 1

    def _check_stall(self) -> None:
        with self._lock:
            if self._open is None or self._last_frame_mono is None or self._stalled:
                return
            if time.monotonic() - self._last_frame_mono > self.cfg.stall_timeout_s:
                self._stalled = True
                self._s["stalls"] += 1
                log.warning("stall: no frame of series %s for %.1f s", self._open, self.cfg.stall_timeout_s)

    def _bad(self, reason: str) -> None:
        self._s["malformed"][reason] += 1

    def _open_series(self, series: str, header: dict | None) -> None:
        """Make ``series`` the open one (caller holds the lock)."""
        if self._open is not None and self._open != series:
            self._s["series_aborted"] += 1          # a new series started without an end
            self._retire(self._open)
        if self._last_series is not None and self._last_series != series:
            self._s["series_changes"] += 1
        self._s["series_started"] += 1
        self._stale.pop(series, None)
        self._open, self._last_series = series, series
        self._open_header = header
        self._open_meta = ({**header.get("meta", {}), "dwell_s": header["dwell_s"],
                            "frame_time_s": header["frame_time_s"]} if header else {})
        self._expected = None
        self._last_frame_mono = time.monotonic()
        self._stalled = False
        if self._slot is not None and self._slot.series != series:
            self._slot = None                       # an unanalysed frame of the old series
            self._s["dropped_for_analysis"] += 1

    def _retire(self, series: str) -> None:
        self._stale[series] = True
        while len(self._stale) > _STALE_MEMORY:
            self._stale.popitem(last=False)
        if self._open == series:
            self._open, self._open_header, self._expected = None, None, None
            self._stalled = False

    def _gap(self, series: str, first: int, last: int) -> None:
        self._s["gaps"].append((series, first, last))
        self._s["gap_count"] += 1
        self._s["missing_frames"] += last - first + 1

    def _handle(self, parts: list, t_arrival: float) -> None:
        cfg = self.cfg
        nbytes = sum(len(getattr(p, "buffer", p)) for p in parts)
        with self._lock:
            self._s["messages"] += 1
        self._expect(nbytes)
        try:
            msg = decode(parts, max_frame_bytes=cfg.max_frame_bytes, max_side=cfg.max_frame_side_px,
                         t_received=t_arrival)
        except ProtocolError as exc:
            with self._lock:
                self._bad(exc.reason)
            return
        h = msg.header
        if msg.type == "start" and self.budget is not None:
            # the frames' size as announced (+ room for their header)
            self._expect(int(np.prod(h["shape"])) * np.dtype(h["dtype"]).itemsize + 4096, announced=True)
        with self._slot_cond:
            if msg.type == "heartbeat":
                self._s["heartbeats"] += 1
            elif msg.type == "start":
                self._run += 1                       # every start begins a new run (a rerun resets analysis)
                if h["series"] == self._open:
                    self._s["restarts"] += 1        # the publisher restarted mid-series
                    self._open_header = h
                    self._open_meta = {**h.get("meta", {}), "dwell_s": h["dwell_s"],
                                       "frame_time_s": h["frame_time_s"]}
                    self._last_frame_mono = time.monotonic()
                    self._stalled = False
                    if self._slot is not None:      # an unanalysed frame of the previous run
                        self._slot = None
                        self._s["dropped_for_analysis"] += 1
                else:
                    self._open_series(h["series"], h)
            elif msg.type == "end":
                if h["series"] != self._open:
                    self._bad("stale_series")
                    return
                n = h["n_frames"]
                if self._expected is not None and n > self._expected:
                    self._gap(h["series"], self._expected, n - 1)
                elif self._expected is None and n > 0:
                    self._gap(h["series"], 0, n - 1)
                self._s["series_ended"] += 1
                self._retire(h["series"])
            else:  # frame
                frame = msg.frame
                if frame.series != self._open:
                    if frame.series in self._stale:
                        self._bad("stale_series")
                        return
                    self._s["implicit_starts"] += 1     # joined a running series (no start seen)
                    self._run += 1
                    self._open_series(frame.series, None)
                    self._expected = frame.seq
                seq = frame.seq
                if self._expected is None:
                    self._expected = 0
                if seq > self._expected:
                    self._gap(frame.series, self._expected, seq - 1)
                elif seq < self._expected:
                    self._s["seq_rewinds"] += 1         # restart from an earlier seq, or a duplicate
                self._expected = seq + 1
                frame.meta = self._open_meta
                frame.run = self._run
                self._s["frames_received"] += 1
                now = time.monotonic()
                self._last_frame_mono = now
                self._recent.append(now)
                self._stalled = False
                if self._slot is not None:
                    self._s["dropped_for_analysis"] += 1
                self._slot = frame
                self._slot_cond.notify_all()
            if self.recorder is None:
                return
            if self._s["rec_error"] is not None:
                self._s["rec_lost"] += 1
                return
        # Outside the lock: in "block" mode this waits for the recorder thread, which needs it
        # (rarely: _wait_room made room for a message of the expected size before it was read).
        block = cfg.recorder_policy == "block"
        t0 = time.monotonic()
        ok = self._rq.put(parts, t_arrival, nbytes, block=block, stop=self._stop)
        with self._lock:
            if block:
                self._s["rec_blocked_s"] += time.monotonic() - t0
            if not ok:
                self._s["rec_lost"] += 1

    # ------------------------------------------------------------------------------- recorder thread
    def _record_loop(self) -> None:
        while True:
            item = self._rq.get()
            if item is None:
                return
            parts, t, nbytes = item
            try:
                self.recorder.write(parts, t)
            except Exception as exc:  # disk full, I/O error: stop recording, keep receiving
                msg = str(exc) or type(exc).__name__
                log.error("recorder stopped: %s", msg)
                self._rq.done(nbytes)
                dropped = self._rq.clear()
                with self._lock:
                    self._s["rec_error"] = msg
                    self._s["rec_lost"] += 1 + dropped
                # keep consuming (and counting) until closed
                while (item := self._rq.get()) is not None:
                    self._rq.done(item[2])
                    with self._lock:
                        self._s["rec_lost"] += 1
                return
            self._rq.done(nbytes)
            with self._lock:
                self._s["rec_written"] += 1
