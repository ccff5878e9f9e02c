"""The recorder path's queue and, in lossless mode, its byte budget (used by :class:`streamer.receiver.Receiver`).

- :class:`RecorderQueue`: a FIFO bounded in messages and bytes between the receiver's I/O thread and
  the recorder thread; a message's bytes count until it is written.
- :func:`lossless_budget`: how ``StreamConfig.recorder_max_buffer_bytes`` is shared out between that
  queue, libzmq's receive queue and the one message libzmq is still receiving (docs/recording.md).
- :func:`check_lossless_endpoint`: lossless recording is refused over ``ipc://`` (libzmq #4660).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

from stemwatch.config import StreamConfig
from streamer.protocol import MAX_HEADER_BYTES


def socket_limit_bytes(max_frame_bytes: int) -> int:
    """``ZMQ_MAXMSGSIZE`` of the receiving socket: frames up to 4 x ``max_frame_bytes`` still
    arrive (and are refused as ``frame_too_large``, the link intact); beyond that libzmq drops the
    connection before allocating."""
    return max(4 * int(max_frame_bytes), MAX_HEADER_BYTES)


class LosslessTransportError(ValueError):
    """Lossless recording was asked for over ``ipc://``. libzmq drops the last messages a
    back-pressured ipc sender still had in flight when it closes, ignoring its linger (libzmq issue
    #4660: 8 of 14 messages of a ``replay --speed max`` arrived with a receive mark of 4, 2,512 of
    3,000 with the default 1000 behind a slow reader), so over ipc neither "nothing lost" nor a
    byte bound on libzmq's queue can be promised. TCP on loopback does both."""

    user_error = True       # bad input: the CLI prints this one line and exits 2

    def __init__(self, endpoint: str):
        super().__init__(f"lossless recording is not offered over {endpoint}: libzmq can drop an ipc sender's "
                         f"last messages when it closes while the recorder slows it (libzmq issue #4660); "
                         f"use a TCP endpoint, e.g. tcp://127.0.0.1:5555, or record without --lossless")


def check_lossless_endpoint(endpoint: str) -> None:
    """Raise :class:`LosslessTransportError` when lossless recording cannot be offered on
    ``endpoint`` (``ipc://``); commands call it before they create any file."""
    if endpoint.startswith("ipc://"):
        raise LosslessTransportError(endpoint)


@dataclass(frozen=True)
class LosslessBudget:
    """How ``StreamConfig.recorder_max_buffer_bytes`` is shared out in lossless mode
    (``recorder_policy="block"``), all in bytes. What the receiving process holds of the stream is
    at most ``total_bytes``: the recorder queue (messages queued and the one being written) at most
    ``queue_bytes``; libzmq's receive queue at most ``socket_bytes`` (its high-water mark, in
    messages, is set from the message size, see :meth:`socket_hwm`); and one message libzmq is
    still receiving, at most ``message_max_bytes``. The kernel's socket buffers (a few MB) are not
    the process's memory and come on top."""

    total_bytes: int
    socket_bytes: int
    message_max_bytes: int
    queue_bytes: int

    def socket_hwm(self, message_bytes: int, cap: int) -> int:
        """Receive high-water mark (messages) keeping ``socket_bytes`` for messages of this size
        (at least 1, at most ``cap``)."""
        return max(1, min(int(cap), self.socket_bytes // max(1, int(message_bytes))))


def lossless_budget(cfg: StreamConfig) -> LosslessBudget:
    """The lossless recorder path's byte budget for ``cfg``; ValueError (one line) when
    ``recorder_max_buffer_bytes`` cannot hold one largest message in each place."""
    total = int(cfg.recorder_max_buffer_bytes)
    largest = socket_limit_bytes(cfg.max_frame_bytes) + MAX_HEADER_BYTES
    socket = total // 4
    queue = min(int(cfg.recorder_queue_bytes), total - socket - largest)
    if queue < largest:
        need = -(-8 * largest // 3) + 8
        raise ValueError(f"recorder_max_buffer_bytes={total} is too small for max_frame_bytes={cfg.max_frame_bytes}: "
                         f"lossless recording needs at least {need} bytes (and recorder_queue_bytes >= {largest})")
    return LosslessBudget(total, socket, largest, queue)


class RecorderQueue:
    """A bounded FIFO (frames and bytes) feeding a recorder thread. A message's bytes count from
    :meth:`put` until the recorder calls :meth:`done` (written), so ``nbytes`` is everything the
    recorder side holds; ``peak_bytes`` is its maximum."""

    def __init__(self, max_items: int, max_bytes: int):
        self.max_items, self.max_bytes = max_items, max_bytes
        self.items: collections.deque = collections.deque()
        self.nbytes = 0
        self.peak_bytes = 0
        self.cond = threading.Condition()
        self.closed = False

    def _full(self, nbytes: int) -> bool:
        return self.nbytes > 0 and (len(self.items) >= self.max_items or self.nbytes + nbytes > self.max_bytes)

    def wait_room(self, nbytes: int, timeout_s: float | None = None) -> bool:
        """Wait (at most ``timeout_s``) until a message of ``nbytes`` would fit; True if it does."""
        with self.cond:
            return self.cond.wait_for(lambda: self.closed or not self._full(nbytes), timeout_s) and not self.closed

    def put(self, parts: list, t: float, nbytes: int, block: bool = False,
            stop: threading.Event | None = None) -> bool:
        """Queue one message; if full, wait for room when ``block`` (until closed or ``stop`` is
        set: then False) else return False."""
        with self.cond:
            if block:
                while self._full(nbytes) and not self.closed:
                    if stop is not None and stop.is_set():
                        return False
                    self.cond.wait(0.1)
            elif self._full(nbytes):
                return False
            self.items.append((parts, t, nbytes))
            self.nbytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.nbytes)
            self.cond.notify_all()
            return True

    def get(self):
        """The next item, or None once closed and empty. Its bytes stay counted until :meth:`done`."""
        with self.cond:
            while not self.items and not self.closed:
                self.cond.wait()
            if not self.items:
                return None
            return self.items.popleft()

    def done(self, nbytes: int) -> None:
        """The recorder has finished with a message of ``nbytes`` (written or given up)."""
        with self.cond:
            self.nbytes -= nbytes
            self.cond.notify_all()

    def clear(self) -> int:
        """Drop every queued message (not the one being written); returns how many."""
        with self.cond:
            n = len(self.items)
            self.nbytes -= sum(item[2] for item in self.items)
            self.items.clear()
            self.cond.notify_all()
            return n

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
