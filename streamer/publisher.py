"""``Publisher``: what runs on the acquisition PC. Needs only pyzmq, msgpack and numpy.

Five lines in a vendor script (Nion Swift, DigitalMicrograph, a detector SDK)::

    from streamer import Publisher
    with Publisher("tcp://*:5555") as pub:
        pub.start_series("s1", shape=(512, 512), dtype="float32", pixel_size_A=0.1, frame_time_s=0.2)
        for image in acquisition():          # (H, W) numpy arrays
            pub.send_frame(image)

Frames are sent without copying (part 1 of the message is the array's own buffer): do not modify
an array after passing it to :meth:`Publisher.send_frame` (or pass ``copy=True``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import zmq

from streamer import protocol
from streamer.security import Curve, apply_curve

log = logging.getLogger(__name__)

#: Default ``send_timeout_s``: an acquisition script never waits longer than this for the analyzer.
DEFAULT_SEND_TIMEOUT_S = 2.0


class Publisher:
    """Publish one or more acquisition series over ZeroMQ (protocol v1, docs/protocol.md).

    endpoint : ZeroMQ endpoint, e.g. ``tcp://*:5555`` (bind) or ``tcp://analyzer:5555`` (connect).
    bind : bind (default, the acquisition PC is the stable end) or connect.
    socket_type : ``PUSH`` (default: lossless, the send blocks when the receiver's queue is full)
        or ``PUB`` (many subscribers, messages dropped when a subscriber is slow or absent).
    curve : optional :class:`streamer.security.Curve` (the binding side is the CURVE server).
    sndhwm : send high-water mark in messages.
    send_timeout_s : how long a send may wait for the receiver (default :data:`DEFAULT_SEND_TIMEOUT_S`,
        2 s): a frame not queued by then is dropped, counted in :attr:`dropped`, and ``send_frame``
        returns False; ``start_series`` raises :class:`TimeoutError`. None blocks forever (only for
        tools that want back-pressure, e.g. replay).
    blocking : False: never wait at all: a frame that cannot be queued at once (no receiver, or
        the receiver's queue is full) is dropped and counted (the microscope is never slowed).
    max_frame_bytes : the receiver's limit (``StreamConfig.max_frame_bytes``; a receiver with
        default settings takes at most :attr:`RECEIVER_DEFAULT_MAX_FRAME_BYTES` = 32 MiB, i.e.
        2048 x 2048 float64): a larger frame is refused here, counted in :attr:`refused` and
        :attr:`dropped`, and ``send_frame`` returns False. None (default): no local check (the
        receiver refuses it and counts it as ``frame_too_large``; the link stays up).

    Leaving a ``with Publisher(...)`` block sends ``end`` for a series still open.
    """

    #: the largest pixel buffer a receiver with default settings accepts (bytes)
    RECEIVER_DEFAULT_MAX_FRAME_BYTES = protocol.DEFAULT_MAX_FRAME_BYTES

    def __init__(self, endpoint: str, bind: bool = True, socket_type: str = "PUSH",
                 curve: Curve | None = None, sndhwm: int = 16, send_timeout_s: float | None = DEFAULT_SEND_TIMEOUT_S,
                 linger_s: float = 1.0, blocking: bool = True,
                 max_frame_bytes: int | None = None):
        socket_type = socket_type.upper()
        if socket_type not in ("PUSH", "PUB"):
            raise ValueError(f"socket_type must be PUSH or PUB, got {socket_type!r}")
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUSH if socket_type == "PUSH" else zmq.PUB)
        self._auth = None
        try:
            self._sock.sndhwm = int(sndhwm)
            self._sock.linger = int(linger_s * 1000)
            if send_timeout_s is not None:
                self._sock.sndtimeo = int(send_timeout_s * 1000)
            self._auth = apply_curve(self._ctx, self._sock, curve, server=bind)
            if bind:
                self._sock.bind(endpoint)
            else:
                # queue only to peers that completed the handshake (never to a refused one)
                self._sock.immediate = 1
                self._sock.connect(endpoint)
        except Exception:
            self.close()
            raise
        self.socket_type = socket_type
        self.blocking = bool(blocking)
        self.send_timeout_s = send_timeout_s
        self.max_frame_bytes = None if max_frame_bytes is None else int(max_frame_bytes)
        self.refused = 0
        self.series: str | None = None
        self.shape: tuple[int, int] | None = None
        self.dtype: str | None = None
        self.pixel_size_A: float = 0.0
        self.next_seq = 0
        self.sent = 0
        self.dropped = 0

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound or connected (resolves ``tcp://127.0.0.1:*``)."""
        return self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _send(self, parts: list, copy: bool = False) -> bool:
        try:
            self._sock.send_multipart(parts, 0 if self.blocking else zmq.NOBLOCK, copy=copy)
            return True
        except zmq.Again:
            return False

    def start_series(self, series: str, shape: tuple[int, int], dtype: Any, pixel_size_A: float,
                     dwell_s: float = 0.0, frame_time_s: float = 0.0, meta: dict | None = None) -> bool:
        """Open a series: shape (H, W) px, pixel size A/px, dwell s/pixel, frame time s.
        Sequence numbers restart at 0. ``meta``: free-form msgpack-serialisable metadata.

        Raises :class:`TimeoutError` when the message could not be queued within
        ``send_timeout_s`` (no receiver?). With ``blocking=False`` it returns False instead
        (counted in :attr:`dropped`; a receiver then opens the series at its first frame)."""
        parts = protocol.encode_start(series, shape, dtype, pixel_size_A, dwell_s, frame_time_s, meta)
        self.series, self.shape = str(series), (int(shape[0]), int(shape[1]))
        self.dtype, self.pixel_size_A = protocol.wire_dtype(dtype), float(pixel_size_A)
        self.next_seq = 0
        if self._send(parts, copy=True):
            return True
        if not self.blocking:
            self.dropped += 1
            return False
        raise TimeoutError(f"could not send the start of series {self.series!r} to {self.endpoint} within "
                           f"send_timeout_s={self.send_timeout_s} s: is a receiver (stemwatch serve/record) "
                           "running and connected?")

    def send_frame(self, array: np.ndarray, seq: int | None = None, t_acquired: float | None = None,
                   copy: bool = False) -> bool:
        """Send one (H, W) frame of the open series. ``seq`` defaults to the next number,
        ``t_acquired`` (Unix s) to now. Returns False if it was dropped (``send_timeout_s``)."""
        if self.series is None:
            raise RuntimeError("call start_series() before send_frame()")
        seq = self.next_seq if seq is None else int(seq)
        t = time.time() if t_acquired is None else float(t_acquired)
        array = np.asarray(array)
        if self.max_frame_bytes is not None and array.nbytes > self.max_frame_bytes:
            self.refused += 1
            self.dropped += 1
            log.warning("frame %s#%d refused: %d bytes > max_frame_bytes %d (the receiver's limit)",
                        self.series, seq, array.nbytes, self.max_frame_bytes)
            self.next_seq = seq + 1
            return False
        parts = protocol.encode_frame(self.series, seq, t, array, self.pixel_size_A)
        self.next_seq = seq + 1
        ok = self._send(parts, copy=copy)
        if ok:
            self.sent += 1
        else:
            self.dropped += 1
        return ok

    def end_series(self) -> bool:
        """Close the open series (``end`` with the number of frames, i.e. the next seq). Returns
        False if the message could not be queued within the timeout (the receiver then reports
        the series as stalled)."""
        if self.series is None:
            return True
        ok = self._send(protocol.encode_end(self.series, self.next_seq), copy=True)
        self.series = None
        return ok

    def send_raw(self, parts: list, copy: bool = False) -> bool:
        """Send an already encoded message (a recorded one, during replay) as it is. Returns False
        if it was dropped (``send_timeout_s``)."""
        return self._send(list(parts), copy=copy)

    def heartbeat(self) -> None:
        """Tell receivers the acquisition PC is alive (call about once a second when idle)."""
        self._send(protocol.encode_heartbeat(), copy=True)

    def close(self) -> None:
        """Close the socket (waits up to ``linger_s`` for queued messages) and the context."""
        sock = getattr(self, "_sock", None)
        if sock is not None and not sock.closed:
            sock.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if not self._ctx.closed:
            self._ctx.term()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.series is not None and not self._sock.closed:
                self.end_series()
        finally:
            self.close()
