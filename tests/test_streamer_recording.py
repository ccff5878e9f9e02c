"""Recording format: lossless, checksummed, crash-safe, appendable; the recorder behind a Receiver."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest

from stemwatch.config import StreamConfig
from streamer import Publisher, Receiver
from streamer.protocol import decode, encode_end, encode_frame, encode_heartbeat, encode_start
from streamer.recording import (FILE_HEADER, RecordingError, RecordingReader, RecordingWriter,
                                iter_frames)

from _wait import wait_until


def _messages(n, shape=(16, 12), dtype=np.float32, series="s"):
    rng = np.random.default_rng(3)
    msgs = [encode_start(series, shape, dtype, 0.1, 1e-6, 0.05, {"k": "v"})]
    arrays = []
    for i in range(n):
        a = rng.standard_normal(shape).astype(dtype)
        arrays.append(a)
        msgs.append(encode_frame(series, i, 100.0 + 0.05 * i, a, 0.1))
    msgs.append(encode_end(series, n))
    return msgs, arrays


def _write(path, msgs, close=True):
    w = RecordingWriter(path)
    for i, m in enumerate(msgs):
        w.write(m, 1000.0 + i)
    if close:
        w.close()
    return w


def test_round_trip_exact_bytes_and_times(tmp_path):
    path = tmp_path / "r.swrec"
    msgs, arrays = _messages(20)
    msgs.insert(5, encode_heartbeat())
    _write(path, msgs)
    r = RecordingReader(path)
    got = list(r)
    assert r.complete and r.problem is None and r.n_records == len(msgs)
    for (parts, t), (want, i) in zip(got, zip(msgs, range(len(msgs)))):
        assert t == 1000.0 + i
        assert parts == [bytes(memoryview(p).cast("B")) if isinstance(p, np.ndarray) else p for p in want]
    frames = list(iter_frames(path))
    assert [f.seq for f in frames] == list(range(20))
    for f, a in zip(frames, arrays):
        assert f.data.tobytes() == a.tobytes() and f.meta["k"] == "v" and f.meta["frame_time_s"] == 0.05


def test_every_possible_truncation_reads_back_complete_records(tmp_path):
    path = tmp_path / "t.swrec"
    msgs, _ = _messages(3, shape=(4, 4))
    _write(path, msgs, close=False)
    data = path.read_bytes()
    sizes = []
    w_end = [FILE_HEADER.size]
    r = RecordingReader(path)
    for _ in r.records():
        w_end.append(r.good_end)
    for cut in range(FILE_HEADER.size, len(data) + 1):
        (tmp_path / "cut.swrec").write_bytes(data[:cut])
        rr = RecordingReader(tmp_path / "cut.swrec")
        n = sum(1 for _ in rr)
        expect = sum(1 for e in w_end[1:] if e <= cut)
        assert n == expect, cut
        assert not rr.complete
        if cut in w_end:
            assert "no end-of-recording marker" in rr.problem
        else:
            assert rr.problem.startswith(f"truncated tail after record {expect} at byte {w_end[expect]}")
        sizes.append(n)
    assert sizes[-1] == len(msgs)


def test_corruption_is_detected_and_earlier_records_kept(tmp_path):
    path = tmp_path / "c.swrec"
    msgs, _ = _messages(5, shape=(8, 8))
    _write(path, msgs)
    r = RecordingReader(path)
    ends = [r.good_end for _ in r.records()]
    data = bytearray(path.read_bytes())
    data[ends[2] - 10] ^= 0x01                    # a pixel byte of record 3
    path.write_bytes(bytes(data))
    r = RecordingReader(path)
    # the damaged record is skipped, reading resumes at the next intact one (issue 14)
    assert sum(1 for _ in r) == len(msgs) - 1 and not r.complete
    assert r.problem.startswith(f"payload checksum mismatch in record 3 at byte {ends[1]}")
    assert r.skipped == [{"at_byte": ends[1], "bytes": ends[2] - ends[1], "after_record": 2,
                          "reason": f"payload checksum mismatch in record 3 at byte {ends[1]}"}]
    data = bytearray(path.read_bytes())
    data[ends[2] - 10] ^= 0x01
    data[ends[0] + 12] ^= 0x40                    # t_arrival of record 2: header checksum
    path.write_bytes(bytes(data))
    r = RecordingReader(path)
    assert sum(1 for _ in r) == len(msgs) - 1 and r.problem.startswith("header checksum mismatch in record 2")


def test_not_a_recording(tmp_path):
    p = tmp_path / "x.swrec"
    p.write_bytes(b"hello world, not a recording")
    r = RecordingReader(p)
    assert list(r) == [] and "bad magic" in r.problem
    with pytest.raises(RecordingError):
        RecordingWriter(p, append=True)
    assert p.read_bytes() == b"hello world, not a recording"


def test_append_after_crash_and_after_close(tmp_path):
    path = tmp_path / "a.swrec"
    msgs, _ = _messages(6, shape=(8, 8))
    _write(path, msgs[:4], close=False)
    with open(path, "ab") as f:                    # a torn record left by a crash
        f.write(b"SWRC\x00\x00\x02\x00garbage")
    w = RecordingWriter(path, append=True)
    assert w.records == 4
    w.write(msgs[4], 5.0)
    w.close()
    w = RecordingWriter(path, append=True)         # after a clean close: the end marker is replaced
    for m in msgs[5:]:
        w.write(m, 6.0)
    w.close()
    r = RecordingReader(path)
    got = [p for p, _ in r]
    assert r.complete and len(got) == len(msgs)
    assert [decode(p).type for p in got] == [decode(m).type for m in msgs]


KILL_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from streamer.recording import RecordingWriter
    from streamer.protocol import encode_frame
    w = RecordingWriter(sys.argv[1])
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    i = 0
    while True:
        w.write(encode_frame("k", i, float(i), a, 0.1), float(i))
        i += 1
        if i == 3:
            print("ready", flush=True)
""")


def test_recorder_killed_mid_write_leaves_readable_file(tmp_path):
    script = tmp_path / "k.py"
    script.write_text(KILL_SCRIPT)
    path = tmp_path / "k.swrec"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, env=env)
    assert p.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = RecordingReader(path)
    frames = list(iter_frames(path, reader=r))
    assert len(frames) >= 3 and not r.complete
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert r.problem.startswith((f"truncated tail after record {len(frames)}", "no end-of-recording marker"))


DISK_FULL_SCRIPT = textwrap.dedent("""
    import json, resource, signal, sys, time
    import numpy as np
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # get EFBIG instead of being killed
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from stemwatch.config import StreamConfig
    from streamer import Publisher, Receiver
    from streamer.recording import RecordingWriter
    w = RecordingWriter(sys.argv[1])
    with Publisher("tcp://127.0.0.1:*", send_timeout_s=None) as pub:       # lossless: wait for the disk
        rx = Receiver(pub.endpoint, StreamConfig(recorder_policy="block"), recorder=w).start()
        pub.start_series("full", (256, 256), "float32", 0.1)
        a = np.ones((256, 256), np.float32)
        for i in range(60):
            pub.send_frame(a * i)
        pub.end_series()
        t = time.time()
        while rx.stats()["messages"] < 62 and time.time() - t < 120:       # hang guard only
            time.sleep(0.01)
        rx.stop()
        w.close()                                  # no-op after the error: must not raise
        print(json.dumps(rx.stats()))
""")


def test_disk_full_clear_error_and_valid_file(tmp_path):
    script = tmp_path / "d.py"
    script.write_text(DISK_FULL_SCRIPT)
    path = tmp_path / "d.swrec"
    limit = 10 * 256 * 256 * 4 + 5000                # room for about 10 frames
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, str(script), str(path), str(limit)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout.strip().splitlines()[-1])
    rec = st["recorder"]
    assert "file size limit reached" in rec["error"] and "valid up to record" in rec["error"]
    assert st["frames_received"] == 60                 # receiving went on
    assert rec["written"] + rec["lost"] == 62           # every message accounted for
    assert path.stat().st_size <= limit
    r = RecordingReader(path)
    frames = list(iter_frames(path, reader=r))
    assert r.n_records == rec["written"] and "no end-of-recording marker" in r.problem
    assert [f.seq for f in frames] == list(range(len(frames))) and len(frames) >= 8
    assert all(float(f.data[0, 0]) == f.seq for f in frames)


def test_write_error_in_process_keeps_file_valid(tmp_path):
    path = tmp_path / "e.swrec"
    msgs, _ = _messages(4, shape=(8, 8))
    w = RecordingWriter(path)
    for m in msgs[:3]:
        w.write(m, 1.0)
    good = path.stat().st_size
    real_writev = os.writev
    calls = []

    def failing_writev(fd, bufs):          # write part of the record, then fail like a full disk
        if calls:
            raise OSError(28, "No space left on device")
        calls.append(1)
        return real_writev(fd, [bytes(memoryview(bufs[0]))[:7]])

    os.writev = failing_writev
    try:
        with pytest.raises(RecordingError, match="disk full"):
            w.write(msgs[3], 2.0)
    finally:
        os.writev = real_writev
    assert path.stat().st_size == good
    with pytest.raises(RecordingError):
        w.write(msgs[3], 2.0)
    w.close()
    r = RecordingReader(path)
    assert sum(1 for _ in r) == 3


def _full_speed(tmp_path, n):
    """Publisher sends n 512x512 float32 frames as fast as the socket takes them."""
    path = tmp_path / "fs.swrec"
    w = RecordingWriter(path)
    rng = np.random.default_rng(7)
    pool = [rng.standard_normal((512, 512)).astype(np.float32) for _ in range(4)]
    with Publisher("tcp://127.0.0.1:*", send_timeout_s=None) as pub:       # lossless: wait for the disk
        rx = Receiver(pub.endpoint, StreamConfig(recorder_policy="block"), recorder=w).start()
        pub.start_series("fast", (512, 512), "float32", 0.1)
        for i in range(n):
            pub.send_frame(pool[i % 4])
        pub.end_series()
        t_end = time.monotonic() + 600                  # hang guard only, not a speed claim
        while rx.stats()["messages"] < n + 2 and time.monotonic() < t_end:
            time.sleep(0.01)
        rx.stop()
    w.close()
    st = rx.stats()
    assert st["frames_received"] == n and st["recorder"]["lost"] == 0
    assert st["recorder"]["written"] == n + 2 and st["gaps"] == []
    r = RecordingReader(path)
    crcs = [zlib.crc32(p) for p in pool]
    seqs = []
    for f in iter_frames(path, reader=r):          # reader verifies every record's checksum
        assert zlib.crc32(f.data) == crcs[f.seq % 4]
        seqs.append(f.seq)
    assert r.complete and seqs == list(range(n))
    path.unlink()


def test_full_speed_2000_frames_lossless_recording(tmp_path):
    _full_speed(tmp_path, 2000)


@pytest.mark.slow
def test_full_speed_10000_frames_lossless_recording(tmp_path):
    _full_speed(tmp_path, 10_000)


def test_drop_policy_counts_every_lost_message(tmp_path):
    class SlowWriter:
        def __init__(self):
            self.n = 0

        def write(self, parts, t):
            time.sleep(0.01)
            self.n += 1

    w = SlowWriter()
    with Publisher("tcp://127.0.0.1:*") as pub:
        rx = Receiver(pub.endpoint, StreamConfig(recorder_queue_frames=8), recorder=w).start()
        pub.start_series("slow", (64, 64), "uint16", 0.1)
        for _ in range(200):
            pub.send_frame(np.zeros((64, 64), np.uint16))
        assert wait_until(lambda: rx.stats()["frames_received"] >= 200)        # a hang guard
        rx.stop()
    st = rx.stats()["recorder"]
    assert st["lost"] > 0 and st["written"] == w.n and st["written"] + st["lost"] == 201
