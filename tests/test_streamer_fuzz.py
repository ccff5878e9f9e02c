"""Hostile input: the decoder never fails other than with a ProtocolError, and over a real socket
every random or mutated message is counted, skipped, and kept out of the recording."""

import collections
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stemwatch.config import StreamConfig
from streamer import Receiver
from streamer.protocol import (MESSAGE_PARTS, ProtocolError, decode, encode_end, encode_frame,
                               encode_heartbeat, encode_start)
from streamer.recording import RecordingReader, RecordingWriter

REASONS = {"wrong_part_count", "header_too_large", "bad_msgpack", "header_not_map", "unknown_version",
           "unknown_type", "unknown_dtype", "bad_shape", "shape_too_large", "frame_too_large", "size_mismatch"}
LIMITS = dict(max_frame_bytes=1 << 16, max_side=512)


def check_decode(parts):
    """decode() either returns a consistent message or raises ProtocolError with a known reason."""
    try:
        m = decode(parts, **LIMITS)
    except ProtocolError as exc:
        r = exc.reason
        assert r in REASONS or r.startswith(("missing_field:", "bad_field:")), r
        return r
    assert m.type in MESSAGE_PARTS and len(parts) == MESSAGE_PARTS[m.type]
    if m.type == "frame":
        f = m.frame
        assert f.data.ndim == 2 and f.data.nbytes <= LIMITS["max_frame_bytes"]
        assert max(f.data.shape) <= LIMITS["max_side"]
        assert f.data.nbytes == len(memoryview(parts[1]).cast("B"))
    return None


# ------------------------------------------------------------------------------ strategies
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.binary(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
FIELDS = ["version", "type", "series", "seq", "t_acquired", "shape", "dtype", "pixel_size_A", "dwell_s",
          "frame_time_s", "meta", "n_frames", "t_sent"]


def _valid(kind, h, w, dtype):
    a = np.zeros((h, w), dtype)
    return {"start": encode_start("s", (h, w), dtype, 0.1, 1e-6, 0.1, {"a": 1}),
            "frame": encode_frame("s", 7, 1.5, a, 0.1),
            "end": encode_end("s", 8), "heartbeat": encode_heartbeat()}[kind]


@st.composite
def structured_messages(draw):
    kind = draw(st.sampled_from(["start", "frame", "end", "heartbeat"]))
    dtype = draw(st.sampled_from(["|u1", "<u2", ">u2", "<i4", "<f4", ">f8"]))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    parts = [bytes(memoryview(p).cast("B")) for p in _valid(kind, h, w, dtype)]
    header = msgpack.unpackb(parts[0])
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            header.pop(key, None)
        else:
            header[key] = draw(values)
    if draw(st.integers(0, 4)) == 0:
        header["shape"] = [draw(st.integers(-5, 2**40)), draw(st.integers(-5, 2**40))]
    try:
        parts[0] = msgpack.packb(header, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        pass
    op = draw(st.integers(0, 5))
    if op == 0 and len(parts) == 2:
        parts[1] = draw(st.binary(max_size=300))
    elif op == 1:
        parts = parts[: draw(st.integers(0, len(parts)))]
    elif op == 2:
        parts.append(draw(st.binary(max_size=20)))
    return parts


@st.composite
def byte_mutations(draw):
    kind = draw(st.sampled_from(["start", "frame", "end", "heartbeat"]))
    parts = [bytearray(memoryview(p).cast("B")) for p in _valid(kind, 4, 6, "<f4")]
    i = draw(st.integers(0, len(parts) - 1))
    for _ in range(draw(st.integers(1, 4))):
        if not parts[i]:
            break
        pos = draw(st.integers(0, len(parts[i]) - 1))
        choice = draw(st.integers(0, 2))
        if choice == 0:
            parts[i][pos] ^= draw(st.integers(1, 255))
        elif choice == 1:
            del parts[i][pos:]
        else:
            parts[i][pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return [bytes(p) for p in parts]


any_message = (st.lists(st.binary(max_size=64), max_size=4) | structured_messages() | byte_mutations())


@settings(max_examples=2_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(any_message)
def test_decoder_fuzz_2000(parts):
    check_decode(parts)


@pytest.mark.slow
@settings(max_examples=100_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(any_message)
def test_decoder_fuzz_100000(parts):
    check_decode(parts)


# ------------------------------------------------------------------------------ over a socket

def _random_messages(n, rng):
    """A deterministic mix: valid messages, byte-mutated ones, structural junk."""
    out = []
    seq = 0
    for i in range(n):
        r = rng.random()
        if r < 0.25:
            a = rng.integers(0, 255, (int(rng.integers(1, 40)), int(rng.integers(1, 40))), dtype=np.uint8)
            parts = encode_frame("fz", seq, float(i), a, 0.1)
            seq += int(rng.integers(1, 3))
            parts = [parts[0], a.tobytes()]
        elif r < 0.30:
            parts = encode_start(f"fz{int(rng.integers(0, 3)) or ''}", (8, 8), "uint8", 0.1, 0, 0)
        elif r < 0.33:
            parts = encode_end("fz", seq)
        elif r < 0.36:
            parts = encode_heartbeat()
        elif r < 0.7:
            a = np.zeros((int(rng.integers(1, 20)), 7), np.float32)
            parts = [bytearray(p) for p in (encode_frame("fz", seq, 1.0, a, 0.1)[0], a.tobytes())]
            k = int(rng.integers(0, 2))
            for _ in range(int(rng.integers(1, 4))):
                if len(parts[k]):
                    parts[k][int(rng.integers(0, len(parts[k])))] ^= int(rng.integers(1, 256))
            if rng.random() < 0.3:
                parts[k] = parts[k][: int(rng.integers(0, len(parts[k]) + 1))]
            parts = [bytes(p) for p in parts]
        elif r < 0.85:
            parts = [rng.bytes(int(rng.integers(0, 64))) for _ in range(int(rng.integers(1, 4)))]
        else:
            h = {"version": 1, "type": "frame", "series": "fz", "seq": 0, "t_acquired": 0.0,
                 "shape": [int(rng.integers(1, 2**31)), int(rng.integers(1, 2**31))],
                 "dtype": str(rng.choice(["<f8", "<f4", "|u1", "<c16", "object"])), "pixel_size_A": 0.1}
            parts = [msgpack.packb(h), rng.bytes(int(rng.integers(0, 100)))]
        out.append([bytes(memoryview(p).cast("B")) if isinstance(p, np.ndarray) else bytes(p) for p in parts])
    return out


def test_socket_fuzz_every_message_counted_and_recording_clean(tmp_path):
    rng = np.random.default_rng(2024)
    msgs = _random_messages(2_500, rng)
    expected = collections.Counter()
    for parts in msgs:
        try:
            decode(parts, max_frame_bytes=1 << 20, max_side=1024)
        except ProtocolError as exc:
            expected[exc.reason] += 1
    assert sum(expected.values()) > 1000 and len(expected) >= 8       # the mix really is hostile
    path = tmp_path / "fz.swrec"
    w = RecordingWriter(path)
    rx = Receiver("tcp://127.0.0.1:*", StreamConfig(max_frame_bytes=1 << 20, max_frame_side_px=1024,
                                                    recorder_policy="block"), bind=True, recorder=w).start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(rx.endpoint)
    try:
        for parts in msgs:
            push.send_multipart(parts)
        t_end = time.monotonic() + 120                  # hang guard only
        while rx.stats()["messages"] < len(msgs) and time.monotonic() < t_end:
            time.sleep(0.02)
    finally:
        push.close(0)
        ctx.term()
        rx.stop()
        w.close()
    s = rx.stats()
    assert s["messages"] == len(msgs)
    malformed = collections.Counter(s["malformed"])
    stale = malformed.pop("stale_series", 0)
    assert malformed == expected                                       # every reason, exactly
    accepted = len(msgs) - s["malformed_total"]
    assert s["recorder"]["written"] == accepted and s["recorder"]["lost"] == 0
    r = RecordingReader(path)
    recorded = [decode(p, max_frame_bytes=1 << 20, max_side=1024) for p, _ in r]   # all decodable
    assert r.complete and len(recorded) == accepted
    assert sum(m.type == "frame" for m in recorded) == s["frames_received"]
