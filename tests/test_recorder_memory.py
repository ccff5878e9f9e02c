"""Issue 14, criterion 7: the lossless recorder path holds a bounded number of bytes, whatever the
frame size, and still loses nothing (the end of the stream included) when the publisher exits at
once. The sink is slow (it sleeps per MiB) and held shut at first, so the backlog is certain, not a
matter of timing."""

import threading
import time

import msgpack
import numpy as np
import pytest

from stemwatch.config import StreamConfig
from streamer import Publisher, Receiver
from streamer.lossless import lossless_budget, socket_limit_bytes
from streamer.protocol import MAX_HEADER_BYTES
from _wait import wait_until

MiB = 1 << 20


class SlowSink:
    """A recorder that waits for ``gate``, then sleeps ``s_per_MiB`` per MiB written."""

    def __init__(self, s_per_MiB: float):
        self.gate = threading.Event()
        self.s_per_MiB = s_per_MiB
        self.kinds: list[str] = []
        self.seqs: list[int] = []
        self.first_pixel: list[float] = []

    def write(self, parts, t):
        self.gate.wait(120)
        data = [bytes(getattr(p, "buffer", p)) for p in parts]
        time.sleep(self.s_per_MiB * sum(map(len, data)) / MiB)
        h = msgpack.unpackb(data[0])
        self.kinds.append(h["type"])
        if h["type"] == "frame":
            self.seqs.append(h["seq"])
            self.first_pixel.append(float(np.frombuffer(data[1], np.float32)[0]))


def test_lossless_recorder_path_holds_at_most_its_byte_budget_and_loses_nothing():
    """2 MiB frames into a lossless receiver with a 40 MiB budget and a slow disk: the recorder
    queue's own accounting never exceeds its share, the sender is held back (it cannot hand over
    more than the budget plus the kernel's socket buffers; before the fix libzmq's queue took 1000
    messages of any size, i.e. all 40 frames here), and every frame arrives, the last ones and the
    ``end`` included, although the publisher closes right after sending."""
    n_frames, frame = 40, np.zeros((1024, 512), np.float32)             # 2 MiB each, 80 MiB in all
    cfg = StreamConfig(recorder_policy="block", max_frame_bytes=2 * MiB, recorder_max_buffer_bytes=40 * MiB)
    budget = lossless_budget(cfg)
    assert budget.queue_bytes + budget.socket_bytes + budget.message_max_bytes <= 40 * MiB
    sink = SlowSink(s_per_MiB=0.005)
    pub = Publisher("tcp://127.0.0.1:*", sndhwm=1, send_timeout_s=None, linger_s=120.0)
    rx = Receiver(pub.endpoint, cfg, recorder=sink).start()
    errors: list[BaseException] = []

    def acquire():                      # an acquisition script that exits as soon as it has sent
        try:
            with pub:
                pub.start_series("big", frame.shape, frame.dtype, 0.1, frame_time_s=0.05)
                for i in range(n_frames):
                    pub.send_frame(np.full_like(frame, i), copy=True)
        except BaseException as exc:    # shown below, not swallowed
            errors.append(exc)

    sender = threading.Thread(target=acquire, daemon=True)
    sender.start()
    try:
        # The disk is shut: the queue fills to its share and the receiver stops reading (its
        # libzmq queue then takes at most one message of the largest size the socket accepts).
        assert rx.stats()["recorder"]["socket_hwm"] == 1
        assert wait_until(lambda: rx.stats()["recorder"]["backlog_bytes"] > budget.queue_bytes - 2 * frame.nbytes,
                          timeout=120)
        time.sleep(0.5)                 # let the sender push whatever the path would still take
        rec = rx.stats()["recorder"]
        assert rec["max_buffer_bytes"] == 40 * MiB and rec["queue_limit_bytes"] == budget.queue_bytes
        assert budget.queue_bytes - 2 * frame.nbytes < rec["backlog_bytes"] <= budget.queue_bytes
        kernel_slack = 16 * MiB         # TCP buffers of both ends (kernel memory, not the process's)
        sender_side = 2 * frame.nbytes  # the sender's own queue (sndhwm 1) and the frame in send()
        assert pub.sent * frame.nbytes <= 40 * MiB + kernel_slack + sender_side, pub.sent
        assert pub.sent < n_frames
        sink.gate.set()                 # the disk starts writing, slowly
        sender.join(120)
        assert not sender.is_alive() and not errors, errors
        assert wait_until(lambda: rx.stats()["series_ended"] == 1, timeout=120)
    finally:
        sink.gate.set()
        rx.stop()
    st = rx.stats()
    assert st["recorder"]["lost"] == 0 and st["recorder"]["error"] is None
    assert sink.kinds == ["start"] + ["frame"] * n_frames + ["end"]
    assert sink.seqs == list(range(n_frames)) and sink.first_pixel == [float(i) for i in range(n_frames)]
    assert 0 < st["recorder"]["peak_bytes"] <= budget.queue_bytes
    assert st["recorder"]["backlog_bytes"] == 0


def test_the_socket_queue_mark_is_bounded_in_bytes_in_lossless_mode():
    """libzmq's queue holds ``socket_bytes`` of the largest messages the socket accepts (a mark
    fixed when the socket is made); live analysis ("drop") keeps ``rcvhwm``; lossless over ipc is refused."""
    lossless = StreamConfig(recorder_policy="block", max_frame_bytes=4 * MiB, recorder_max_buffer_bytes=256 * MiB)
    budget = lossless_budget(lossless)
    assert budget.socket_bytes == 64 * MiB and budget.message_max_bytes == 16 * MiB + MAX_HEADER_BYTES
    assert Receiver.socket_hwm(lossless, budget, "tcp://10.0.0.1:5555") == 3       # 3 x 17 MiB <= 64 MiB
    assert Receiver.socket_hwm(lossless, budget, "inproc://s") == 3
    assert Receiver.socket_hwm(StreamConfig(), None, "tcp://10.0.0.1:5555") == StreamConfig().rcvhwm
    rx = Receiver("tcp://127.0.0.1:1", lossless, recorder=object())
    try:
        assert rx.stats()["recorder"]["socket_hwm"] == 3 and rx.budget == budget
    finally:
        rx.stop()


def test_a_budget_too_small_for_the_frame_limit_is_refused_clearly():
    cfg = StreamConfig(recorder_policy="block", max_frame_bytes=32 * MiB, recorder_max_buffer_bytes=100 * MiB)
    with pytest.raises(ValueError, match="recorder_max_buffer_bytes=.* is too small for max_frame_bytes"):
        Receiver("tcp://127.0.0.1:1", cfg, recorder=object())
    largest = socket_limit_bytes(32 * MiB) + MAX_HEADER_BYTES
    ok = StreamConfig(recorder_policy="block", max_frame_bytes=32 * MiB,
                      recorder_max_buffer_bytes=-(-8 * largest // 3) + 8)
    assert lossless_budget(ok).queue_bytes >= largest
    # "drop" mode (live analysis) never waits for the disk: no lossless budget, the limits as configured
    rx = Receiver("tcp://127.0.0.1:1", StreamConfig(max_frame_bytes=32 * MiB, recorder_max_buffer_bytes=100 * MiB),
                  recorder=object())
    try:
        assert rx.budget is None and rx.stats()["recorder"]["queue_limit_bytes"] == StreamConfig().recorder_queue_bytes
    finally:
        rx.stop()


def test_lossless_mode_over_ipc_is_refused_with_its_reason():
    """Over ipc libzmq drops a back-pressured sender's last messages when it closes (issue #4660)
    and a byte-sized mark would make that worse: the lossless path is TCP (or inproc) only."""
    from streamer.lossless import LosslessTransportError

    with pytest.raises(LosslessTransportError, match="libzmq issue #4660"):
        Receiver("ipc:///tmp/sw-lossless", StreamConfig(recorder_policy="block"), recorder=object())
    rx = Receiver("ipc:///tmp/sw-lossless", StreamConfig(recorder_policy="drop"), recorder=object())
    assert rx.budget is None
    rx.stop()
