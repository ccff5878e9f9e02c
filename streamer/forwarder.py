"""The stemwatch side of the Nion Swift plug-in: settings, and a forwarder that never blocks acquisition.

The plug-in (``nionswift_plugin/stemwatch_forwarder``) turns each completed scan frame of the chosen
channel into a :class:`ScanFrame` (plain numpy data and numbers, no Nion types) and hands it to
:meth:`Forwarder.submit`, on Swift's acquisition thread. ``submit`` only decides the frame's series
and sequence number and appends it to a bounded queue; when the queue is full the *oldest* queued
frame is dropped and counted (``dropped_queue``). A sender thread owns the
:class:`~streamer.publisher.Publisher` socket (created and closed in that thread) and sends what is
queued; a frame the socket does not take within ``send_timeout_s`` (no analyzer connected, or one
that stopped reading) is dropped and counted too (``dropped_send``). Acquisition is never slowed.

Series: a new series starts whenever the frame shape, pixel size, dtype or channel changes, or the
Swift frame index goes backwards (acquisition restarted). Within a series ``seq`` is
``frame_index - first_frame_index``, so a frame dropped anywhere (queue, socket, or skipped by
Swift) shows up at the receiver as a sequence gap, and Swift's frame index of any frame is
``meta["swift_first_frame_index"] + seq``.

This module needs only numpy, pyzmq and msgpack (what :mod:`streamer.publisher` needs); it does not
import Nion.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Environment variable naming the settings file (else :func:`default_settings_path`).
SETTINGS_ENV = "STEMWATCH_SWIFT_SETTINGS"


@dataclass(frozen=True)
class ForwarderSettings:
    """What the plug-in reads from its settings file (JSON, every key optional).

    endpoint : ZeroMQ endpoint; ``tcp://*:5555`` binds on the acquisition PC (stemwatch connects).
    bind : bind (default) or connect to ``endpoint``.
    channel : the scan channel to forward, by name (``HAADF`` default, ``MAADF``, ...).
    socket_type : ``PUSH`` (one analyzer) or ``PUB`` (several).
    queue_frames : frames held between acquisition and the sender thread; beyond that the oldest is dropped.
    send_timeout_s : how long the sender waits for the socket to take a frame before dropping it.
    heartbeat_s : heartbeat period while no frame is sent (0: none).
    send_subscan : forward subscan frames too (as their own series, ``meta["subscan"]``); default skip them.
    enabled : False loads the plug-in but forwards nothing.
    """

    endpoint: str = "tcp://*:5555"
    bind: bool = True
    channel: str = "HAADF"
    socket_type: str = "PUSH"
    queue_frames: int = 8
    send_timeout_s: float = 0.5
    heartbeat_s: float = 1.0
    send_subscan: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.socket_type.upper() not in ("PUSH", "PUB"):
            raise ValueError(f"socket_type must be PUSH or PUB, got {self.socket_type!r}")
        if not int(self.queue_frames) >= 1:
            raise ValueError(f"queue_frames must be >= 1, got {self.queue_frames}")
        if not float(self.send_timeout_s) > 0:
            raise ValueError(f"send_timeout_s must be > 0, got {self.send_timeout_s}")
        if not str(self.channel).strip():
            raise ValueError("channel must be a channel name such as HAADF or MAADF")


def default_settings_path() -> Path:
    """``$STEMWATCH_SWIFT_SETTINGS`` if set, else ``~/.config/stemwatch/swift_forwarder.json``."""
    env = os.environ.get(SETTINGS_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stemwatch" / "swift_forwarder.json"


def load_settings(path: str | Path | None = None) -> ForwarderSettings:
    """Settings from a JSON file (missing file: the defaults). Unknown keys or bad values raise
    ValueError naming the file and the key."""
    p = Path(path) if path is not None else default_settings_path()
    if not p.is_file():
        return ForwarderSettings()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: not a readable JSON settings file ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: the settings must be a JSON object")
    known = {f.name: f.type for f in fields(ForwarderSettings)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{p}: unknown setting(s) {unknown}; known: {sorted(known)}")
    try:
        return ForwarderSettings(**raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: {exc}") from None


@dataclass
class ScanFrame:
    """One completed scan frame as plain data (what the plug-in extracts from Swift's xdata).

    data : (H, W) array; channel : channel name; pixel_size_A : A/px; t_acquired : Unix s (UTC);
    frame_index : Swift's frame number; dwell_s : s per pixel; fov_nm : field of view;
    high_tension_V : beam energy (V) or None; frame_time_s : s per frame (0 if unknown);
    subscan : True for a subscan frame; meta : other instrument metadata (JSON-like).
    """

    data: np.ndarray
    channel: str
    pixel_size_A: float
    t_acquired: float
    frame_index: int
    dwell_s: float = 0.0
    fov_nm: float = 0.0
    high_tension_V: float | None = None
    frame_time_s: float = 0.0
    subscan: bool = False
    meta: dict = field(default_factory=dict)


@dataclass
class _Series:
    name: str
    key: tuple
    first_index: int
    last_index: int
    start: tuple              # (shape, dtype, pixel_size_A, dwell_s, frame_time_s, meta)


class Forwarder:
    """Bounded queue + sender thread owning a :class:`~streamer.publisher.Publisher` (module docstring).

    ``publisher_factory(settings)`` makes the Publisher inside the sender thread (tests pass one
    that binds a free port). :meth:`stats` says what was sent, dropped and skipped.
    """

    def __init__(self, settings: ForwarderSettings | None = None, publisher_factory=None, name: str = "swift"):
        self.settings = settings or ForwarderSettings()
        self._factory = publisher_factory or _default_publisher
        self._name = name
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._closing = False
        self._series: _Series | None = None
        self._n_series = 0
        self._counts = collections.Counter()
        self._endpoint: str | None = None
        self._error: str | None = None
        self._last_drop_log = 0.0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemwatch-forwarder", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)

    # ------------------------------------------------------------------ acquisition thread side
    def submit(self, frame: ScanFrame) -> bool:
        """Queue one frame (never blocks; O(1)). Returns False if it was not queued (closed, disabled
        or skipped); a full queue drops the oldest queued frame instead, counted in ``dropped_queue``."""
        if self._closing or not self.settings.enabled:
            return False
        if frame.subscan and not self.settings.send_subscan:
            self._count("skipped_subscan")
            return False
        data = np.asarray(frame.data)
        if data.ndim != 2 or not np.isfinite(frame.pixel_size_A) or frame.pixel_size_A <= 0:
            self._count("skipped_invalid")
            return False
        key = (data.shape, data.dtype.str, float(frame.pixel_size_A), frame.channel, bool(frame.subscan))
        with self._cond:
            s = self._series
            if s is None or s.key != key or frame.frame_index <= s.last_index:
                self._n_series += 1
                stamp = datetime.fromtimestamp(frame.t_acquired, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                meta = {"source": "nionswift", "channel": frame.channel, "fov_nm": float(frame.fov_nm),
                        "dwell_s": float(frame.dwell_s), "swift_first_frame_index": int(frame.frame_index),
                        "subscan": bool(frame.subscan)}
                if frame.high_tension_V is not None:
                    meta["high_tension_V"] = float(frame.high_tension_V)
                meta.update({k: v for k, v in frame.meta.items() if k not in meta})
                s = _Series(name=f"{self._name}-{frame.channel}-{stamp}-{self._n_series}", key=key,
                            first_index=int(frame.frame_index), last_index=int(frame.frame_index),
                            start=(data.shape, data.dtype, float(frame.pixel_size_A), float(frame.dwell_s),
                                   float(frame.frame_time_s), meta))
                self._series = s
            s.last_index = int(frame.frame_index)
            if len(self._queue) >= int(self.settings.queue_frames):
                self._queue.popleft()
                self._counts["dropped_queue"] += 1
                self._log_drops()
            self._queue.append((s, int(frame.frame_index) - s.first_index, float(frame.t_acquired), data))
            self._counts["submitted"] += 1
            self._cond.notify()
        return True

    def _count(self, what: str) -> None:
        with self._cond:
            self._counts[what] += 1

    def _log_drops(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_log >= 5.0:
            self._last_drop_log = now
            c = self._counts
            log.warning("stemwatch forwarder: %d frames dropped so far (%d queue full, %d not taken by the "
                        "socket: is the analyzer connected and reading?)", c["dropped_queue"] + c["dropped_send"],
                        c["dropped_queue"], c["dropped_send"])

    # ------------------------------------------------------------------ sender thread
    def _run(self) -> None:
        try:
            pub = self._factory(self.settings)
        except Exception as exc:            # bad endpoint, port in use: say so, forward nothing
            self._error = f"{type(exc).__name__}: {exc}"
            log.error("stemwatch forwarder: cannot open %s (%s)", self.settings.endpoint, self._error)
            self._closing = True
            self._ready.set()
            return
        self._endpoint = pub.endpoint
        self._ready.set()
        announced: _Series | None = None
        try:
            while True:
                with self._cond:
                    if not self._queue and not self._closing:
                        self._cond.wait(self.settings.heartbeat_s or None)
                    item = self._queue.popleft() if self._queue else None
                    closing = self._closing
                if item is None:
                    if closing:
                        break
                    if self.settings.heartbeat_s:
                        pub.heartbeat()
                    continue
                s, seq, t, data = item
                if announced is not s:
                    if announced is not None:
                        pub.end_series()
                    shape, dtype, px, dwell, ft, meta = s.start
                    try:
                        pub.start_series(s.name, shape, dtype, px, dwell_s=dwell, frame_time_s=ft, meta=meta)
                        announced = s
                    except TimeoutError:
                        with self._cond:
                            self._counts["dropped_send"] += 1
                            self._log_drops()
                        announced = None
                        continue
                if pub.send_frame(data, seq=seq, t_acquired=t):
                    with self._cond:
                        self._counts["sent"] += 1
                else:
                    with self._cond:
                        self._counts["dropped_send"] += 1
                        self._log_drops()
            if announced is not None:
                pub.end_series()
        except Exception as exc:            # never let the thread die silently
            self._error = f"{type(exc).__name__}: {exc}"
            log.exception("stemwatch forwarder: sender stopped")
        finally:
            pub.close()

    # ------------------------------------------------------------------ control
    @property
    def endpoint(self) -> str | None:
        """The endpoint the Publisher actually bound or connected (None until it is open)."""
        return self._endpoint

    def stats(self) -> dict:
        """Counts: submitted, sent, dropped_queue, dropped_send, dropped (both), skipped_subscan,
        skipped_invalid, queued; the current series; the sender's error if it stopped."""
        with self._cond:
            c = dict(self._counts)
            out = {k: int(c.get(k, 0)) for k in ("submitted", "sent", "dropped_queue", "dropped_send",
                                                  "skipped_subscan", "skipped_invalid")}
            out["dropped"] = out["dropped_queue"] + out["dropped_send"]
            out["queued"] = len(self._queue)
            out["series"] = self._series.name if self._series else None
            out["error"] = self._error
            out["endpoint"] = self._endpoint
        return out

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty (frames handed to the socket or dropped); True if it emptied."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._cond:
                if not self._queue:
                    return True
            time.sleep(0.01)
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting frames, send what is queued (each within ``send_timeout_s``), close the socket."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)


def _default_publisher(settings: ForwarderSettings):
    from streamer.publisher import Publisher

    return Publisher(settings.endpoint, bind=settings.bind, socket_type=settings.socket_type,
                     send_timeout_s=settings.send_timeout_s, sndhwm=max(2, int(settings.queue_frames)))

