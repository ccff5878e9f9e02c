"""Wire protocol v1: encode/decode round trips, every rejection reason, memory safety."""

import msgpack
import numpy as np
import pytest

from streamer import protocol
from streamer.protocol import (ALLOWED_DTYPES, PROTOCOL_VERSION, ProtocolError, decode, encode_end,
                               encode_frame, encode_heartbeat, encode_start)

DTYPES = sorted(ALLOWED_DTYPES)


def _as_bytes(parts):
    return [bytes(memoryview(p).cast("B")) if isinstance(p, np.ndarray) else p for p in parts]


def _frame_header(**over):
    h = {"version": 1, "type": "frame", "series": "s", "seq": 3, "t_acquired": 12.5,
         "shape": [4, 5], "dtype": "<f4", "pixel_size_A": 0.1}
    h.update(over)
    return h


def _reason(parts, **kw):
    with pytest.raises(ProtocolError) as ei:
        decode(parts, **kw)
    return ei.value.reason


@pytest.mark.parametrize("dt", DTYPES)
def test_frame_round_trip_bit_exact_every_dtype(dt):
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=7 * 9 * np.dtype(dt).itemsize, dtype=np.uint8)
    arr = raw.view(dt).reshape(7, 9)               # every bit pattern, NaN payloads included
    parts = encode_frame("ser", 42, 1.7e9 + 0.123456, arr, 0.087)
    assert parts[1] is arr or np.shares_memory(parts[1], arr), "part 1 must be the array itself"
    msg = decode(_as_bytes(parts))
    assert msg.type == "frame"
    f = msg.frame
    assert f.data.dtype.str == np.dtype(dt).str and f.data.shape == (7, 9)
    assert f.data.tobytes() == arr.tobytes()
    assert (f.series, f.seq, f.t_acquired, f.pixel_size_A) == ("ser", 42, 1.7e9 + 0.123456, 0.087)
    assert not f.data.flags.writeable


def test_frame_of_non_contiguous_array_is_made_contiguous():
    a = np.arange(60, dtype=np.uint16).reshape(6, 10)[:, ::2]
    msg = decode(_as_bytes(encode_frame("s", 0, 0.0, a, 1.0)))
    np.testing.assert_array_equal(msg.frame.data, a)


def test_start_end_heartbeat_round_trip():
    meta = {"instrument": "Nion UltraSTEM 100", "voltage_kV": 60, "nested": {"a": [1, 2.5, "x"]}}
    m = decode(encode_start("s1", (512, 256), "uint16", 0.12, 4e-6, 0.55, meta))
    assert m.type == "start"
    assert m.header["shape"] == [512, 256] and m.header["dtype"] == "<u2"
    assert m.header["meta"] == meta
    assert (m.header["pixel_size_A"], m.header["dwell_s"], m.header["frame_time_s"]) == (0.12, 4e-6, 0.55)
    assert m.header["version"] == PROTOCOL_VERSION
    e = decode(encode_end("s1", 17))
    assert e.type == "end" and e.header["n_frames"] == 17 and e.header["series"] == "s1"
    assert decode(encode_heartbeat()).type == "heartbeat"


def test_encoder_rejects_unsupported_dtype_and_shape():
    with pytest.raises(ProtocolError) as ei:
        encode_frame("s", 0, 0.0, np.zeros((4, 4), np.int64), 1.0)
    assert ei.value.reason == "unknown_dtype"
    with pytest.raises(ProtocolError) as ei:
        encode_frame("s", 0, 0.0, np.zeros((2, 4, 4), np.float32), 1.0)
    assert ei.value.reason == "bad_shape"


@pytest.mark.parametrize("mutate, reason", [
    (lambda h: h.pop("seq"), "missing_field:seq"),
    (lambda h: h.pop("series"), "missing_field:series"),
    (lambda h: h.pop("t_acquired"), "missing_field:t_acquired"),
    (lambda h: h.pop("version"), "missing_field:version"),
    (lambda h: h.update(seq="3"), "bad_field:seq"),
    (lambda h: h.update(seq=True), "bad_field:seq"),
    (lambda h: h.update(seq=-1), "bad_field:seq"),
    (lambda h: h.update(t_acquired=float("nan")), "bad_field:t_acquired"),
    (lambda h: h.update(pixel_size_A=-0.1), "bad_field:pixel_size_A"),
    (lambda h: h.update(version=2), "unknown_version"),
    (lambda h: h.update(version="1"), "bad_field:version"),
    (lambda h: h.update(type="image"), "unknown_type"),
    (lambda h: h.update(dtype="<i8"), "unknown_dtype"),
    (lambda h: h.update(dtype="float32"), "unknown_dtype"),
    (lambda h: h.update(shape=[4, 5, 1]), "bad_shape"),
    (lambda h: h.update(shape=[0, 5]), "bad_shape"),
    (lambda h: h.update(shape=[4.0, 5]), "bad_shape"),
    (lambda h: h.update(shape="4x5"), "bad_field:shape"),
    (lambda h: h.update(shape=[4, 6]), "size_mismatch"),
    (lambda h: h.update(series=""), "bad_field:series"),
])
def test_frame_rejections_name_the_reason(mutate, reason):
    h = _frame_header()
    mutate(h)
    assert _reason([msgpack.packb(h), bytes(80)]) == reason


def test_structural_rejections():
    good = msgpack.packb(_frame_header())
    assert _reason([]) == "wrong_part_count"
    assert _reason([good]) == "wrong_part_count"
    assert _reason([good, bytes(80), b""]) == "wrong_part_count"
    assert _reason([b"\xc1", bytes(80)]) == "bad_msgpack"          # 0xc1 is never valid msgpack
    assert _reason([good + b"\x00", bytes(80)]) == "bad_msgpack"   # trailing bytes
    assert _reason([msgpack.packb([1, 2]), bytes(80)]) == "header_not_map"
    assert _reason([bytes(protocol.MAX_HEADER_BYTES + 1)]) == "header_too_large"
    assert _reason([good, bytes(79)]) == "size_mismatch"
    assert _reason([encode_start("s", (4, 4), "f4", 1, 0, 0)[0], b"x"]) == "wrong_part_count"


def test_absurd_shapes_are_rejected_before_any_allocation():
    # 2**31 x 2**31 float64 would be 32 EiB: rejected from the header alone, buffer never touched.
    h = _frame_header(shape=[2**31, 2**31], dtype="<f8")
    assert _reason([msgpack.packb(h), b""]) == "shape_too_large"
    h = _frame_header(shape=[8000, 8000], dtype="<f8")   # sides allowed, bytes not
    assert _reason([msgpack.packb(h), b""], max_frame_bytes=2**20, max_side=8192) == "frame_too_large"
    h = _frame_header(shape=[2**64 - 1, 1])
    assert _reason([msgpack.packb(h), b""]) == "shape_too_large"


def test_limits_are_configurable():
    arr = np.zeros((64, 64), np.float32)
    parts = _as_bytes(encode_frame("s", 0, 0.0, arr, 1.0))
    assert decode(parts, max_frame_bytes=arr.nbytes).frame.shape == (64, 64)
    assert _reason(parts, max_frame_bytes=arr.nbytes - 1) == "frame_too_large"
    assert _reason(parts, max_side=63) == "shape_too_large"


def test_decoded_frame_is_a_view_not_a_copy():
    buf = bytearray(np.arange(12, dtype="<u2").tobytes())
    msg = decode([msgpack.packb(_frame_header(shape=[3, 4], dtype="<u2")), buf])
    buf[0] = 99       # the frame shares memory with the received buffer
    assert msg.frame.data[0, 0] == 99


def test_publisher_side_needs_only_pyzmq_msgpack_numpy():
    import subprocess
    import sys

    code = ("import sys, streamer.publisher, streamer.protocol; "
            "bad = [m for m in ('scipy', 'torch', 'h5py', 'tifffile', 'stemwatch', 'bokeh', 'onnxruntime') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_pickle_in_the_streamer():
    from pathlib import Path

    import streamer

    for path in Path(streamer.__file__).parent.glob("*.py"):
        text = path.read_text()
        for banned in ("import pickle", "recv_pyobj", "send_pyobj", "allow_pickle=True", "cloudpickle"):
            assert banned not in text, f"{path.name} uses {banned}"
