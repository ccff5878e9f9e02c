"""Replay over a real bound socket: byte-exact, paced from t_acquired within 5 %, loops, imports."""

import threading
import time

import numpy as np
import pytest

from stemwatch.config import StreamConfig
from streamer import Receiver
from streamer.protocol import encode_end, encode_frame, encode_start
from streamer.recording import RecordingReader, RecordingWriter
from streamer.replay import parse_speed, replay

from _wait import wait_until


class ListRecorder:
    def __init__(self):
        self.items = []

    def write(self, parts, t_arrival):
        self.items.append(([bytes(getattr(p, "buffer", p)) for p in parts], t_arrival))


def make_recording(path, t_offsets, shape=(32, 32), series="rep"):
    rng = np.random.default_rng(5)
    w = RecordingWriter(path)
    w.write(encode_start(series, shape, "uint16", 0.1, 2e-6, 0.05, {"src": "test"}), 0.0)
    t0 = 1.7e9
    for i, dt in enumerate(t_offsets):
        a = rng.integers(0, 65535, shape, dtype=np.uint16)
        w.write(encode_frame(series, i, t0 + dt, a, 0.1), t0 + dt + 0.01)
    w.write(encode_end(series, len(t_offsets)), t0 + t_offsets[-1] + 0.02)
    w.close()


def run_replay(path, speed, loops=1, on_message=None):
    """Replay into a Receiver; return (received items, replay stats)."""
    rec = ListRecorder()
    bound = threading.Event()
    holder = {}

    def on_bound(ep):
        holder["rx"] = Receiver(ep, StreamConfig(), recorder=rec).start()
        bound.set()

    out = {}
    th = threading.Thread(target=lambda: out.setdefault(
        "stats", replay(path, "tcp://127.0.0.1:*", speed=speed, loops=loops, on_bound=on_bound,
                        on_message=on_message)))
    th.start()
    th.join(60)
    assert not th.is_alive()
    rx = holder["rx"]
    wait_until(lambda: rx.stats()["messages"] >= out["stats"].messages)     # a hang guard; asserted by the caller
    rx.stop()
    return rec.items, out["stats"], rx.stats()


def test_parse_speed():
    assert parse_speed("1") == 1.0 and parse_speed("2.5") == 2.5 and parse_speed("max") == float("inf")
    for bad in ("0", "-2", "fast"):
        with pytest.raises(ValueError):
            parse_speed(bad)


def _check_pacing(items, offsets, speed):
    arrivals = [t for parts, t in items if len(parts) == 2]
    assert len(arrivals) == len(offsets)
    span = (offsets[-1] - offsets[0]) / speed
    got = np.asarray(arrivals) - arrivals[0]
    want = (np.asarray(offsets) - offsets[0]) / speed
    assert abs(got[-1] - span) <= 0.05 * span, (got[-1], span)
    assert np.max(np.abs(got - want)) <= 0.05 * span, np.max(np.abs(got - want))


def _pacing_offsets(speed):
    offsets = [0.05 * speed * i for i in range(21)]
    offsets[10:] = [o + 0.2 * speed for o in offsets[10:]]      # and an irregular pause
    return offsets


@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_replay_follows_the_recorded_schedule(tmp_path, speed):
    """The default suite's pacing check, true on a busy machine too: no frame leaves before its time
    on the recorded schedule (t_acquired / speed from the first frame), the irregular pause included.
    How close to the schedule frames leave is a wall-clock figure: test_replay_pacing_within_5_percent
    (slow, `make test-slow`)."""
    offsets = _pacing_offsets(speed)
    path = tmp_path / "p.swrec"
    make_recording(path, offsets)
    sent = {}
    items, stats, st = run_replay(path, speed, on_message=lambda m, f: sent.setdefault(f, time.monotonic()))
    assert stats.frames == 21 and st["frames_received"] == 21 and st["gaps"] == []
    t = np.asarray([sent[f] for f in range(1, 22)])           # when frame f-1 had left
    want = (np.asarray(offsets) - offsets[0]) / speed
    # never early (an absolute schedule: a late frame does not delay the next ones, so no upper bound
    # on a busy machine); the pause before frame 10 is part of the schedule
    assert np.all(t - t[0] >= want - 0.01), np.min(t - t[0] - want)


@pytest.mark.slow
@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_replay_pacing_within_5_percent(tmp_path, speed):
    """Wall-clock precision of the pacing (slow: a busy machine delays frames; the default suite
    checks the schedule itself in test_replay_follows_the_recorded_schedule)."""
    # 1.0 s x speed of recorded time, so that every speed replays over ~1.2 s of wall time and
    # the 5 % tolerance is not eaten by one scheduler hiccup on a loaded 2-core machine.
    offsets = [0.05 * speed * i for i in range(21)]
    offsets[10:] = [o + 0.2 * speed for o in offsets[10:]]      # and an irregular pause
    path = tmp_path / "p.swrec"
    make_recording(path, offsets)
    items, stats, st = run_replay(path, speed)
    assert stats.frames == 21 and st["frames_received"] == 21 and st["gaps"] == []
    _check_pacing(items, offsets, speed)


def test_replay_is_byte_exact_and_loops(tmp_path):
    path = tmp_path / "b.swrec"
    make_recording(path, [0.01 * i for i in range(30)])
    items, stats, st = run_replay(path, "max", loops=2)
    original = [parts for parts, _ in RecordingReader(path)]
    assert stats.loops == 2 and stats.messages == 2 * len(original)
    assert [p for p, _ in items] == original + original
    assert st["malformed_total"] == 0 and st["series_ended"] == 2 and st["frames_received"] == 60


def _collect(source, n_frames):
    rec = ListRecorder()
    holder = {}
    th = threading.Thread(target=lambda: holder.setdefault("stats", replay(
        source, "tcp://127.0.0.1:*", speed="max", pixel_size_A=0.2, frame_time_s=0.1,
        on_bound=lambda ep: holder.setdefault("rx", Receiver(ep, StreamConfig(), recorder=rec).start()))))
    th.start()
    th.join(60)
    rx = holder["rx"]
    wait_until(lambda: rx.stats()["frames_received"] >= n_frames)           # a hang guard; asserted by the caller
    rx.stop()
    return rec.items, rx.stats()


def test_replay_of_an_npy_stack(tmp_path):
    stack = np.arange(5 * 16 * 16, dtype=np.float32).reshape(5, 16, 16)
    np.save(tmp_path / "stack.npy", stack)
    items, st = _collect(tmp_path / "stack.npy", 5)
    assert st["frames_received"] == 5 and st["series_ended"] == 1 and st["malformed_total"] == 0
    frames = [p for p, _ in items if len(p) == 2]
    assert [f[1] for f in frames] == [a.tobytes() for a in stack]


def test_replay_of_a_directory_plays_its_recordings_in_order(tmp_path):
    np.save(tmp_path / "ground_truth.npy", np.zeros((3, 8, 8), np.float32))     # not a recording: ignored
    (tmp_path / "README.md").write_text("notes")
    make_recording(tmp_path / "a.swrec", [0.01 * i for i in range(5)], series="a")
    make_recording(tmp_path / "b.swrec", [0.01 * i for i in range(3)], series="b")
    items, st = _collect(tmp_path, 8)
    assert st["frames_received"] == 8 and st["series_started"] == 2 and st["series_ended"] == 2
    want = [p for f in ("a.swrec", "b.swrec") for p, _ in RecordingReader(tmp_path / f)]
    assert [p for p, _ in items] == want
