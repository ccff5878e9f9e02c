"""``stemwatch bench ingest``: frames/s and MB/s over tcp loopback, with and without recording.

A publisher in a separate process (like the acquisition PC) sends frames as fast as the socket
takes them (PUSH, zero-copy) to a :class:`~streamer.receiver.Receiver` in this process. Measured:

- ingest: frames/s and MB/s from the publisher's first send to the receiver having decoded the
  last frame (no recorder);
- recording: the same with a :class:`~streamer.recording.RecordingWriter` behind the receiver in
  lossless mode (``recorder_policy="block"``), until every message is written and the file is
  closed and fsync'ed;
- the disk's own sequential write speed for the same volume, in the same directory, just before
  each recording run (4 MiB writes, then fsync), which bounds what any recorder can sustain.

Targets (issue 2): ingest >= 1,000 frames/s at 512x512 float32; recording keeps up with
100 frames/s of 1024x1024 float32 (419 MB/s) or the disk's speed, whichever is lower.
Set ``STEMWATCH_BENCH_DIR`` to measure another disk (default: the system temp directory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

PUBLISHER = textwrap.dedent("""
    import sys, time, numpy as np
    from streamer import Publisher
    endpoint, n, side, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(0)
    pool = [(rng.random((side, side)) * 1000).astype(dtype) for _ in range(4)]
    with Publisher(endpoint, bind=False, sndhwm=16, linger_s=30, send_timeout_s=None) as pub:
        time.sleep(0.3)                         # let the connection come up
        t0 = time.time()
        pub.start_series("bench", (side, side), dtype, 0.1)
        for i in range(n):
            pub.send_frame(pool[i % 4])
        pub.end_series()
        print(t0, flush=True)
""")


def _disk_speed(directory: Path, nbytes: int) -> float:
    """Sequential write speed in MB/s (4 MiB writes, fsync included)."""
    chunk = os.urandom(4 << 20)
    path = directory / "disk_speed.bin"
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        while written < nbytes:
            written += os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    path.unlink()
    return written / dt / 1e6


def _run(side: int, dtype: str, n: int, record_dir: Path | None) -> dict:
    from stemwatch.config import StreamConfig
    from streamer.receiver import Receiver
    from streamer.recording import RecordingWriter

    writer = RecordingWriter(record_dir / "bench.swrec") if record_dir else None
    cfg = StreamConfig(recorder_policy="block", max_frame_bytes=max(side * side * 8, 1 << 20))
    rx = Receiver("tcp://127.0.0.1:*", cfg, bind=True, recorder=writer).start()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, rx.endpoint, str(n), str(side), dtype],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 600
        while rx.stats()["frames_received"] < n and time.monotonic() < deadline:
            if proc.poll() not in (None, 0):
                raise RuntimeError(f"bench publisher failed: {proc.stderr.read()[-2000:]}")
            time.sleep(0.0005)
        t_ingested = time.time()
        out, err = proc.communicate(timeout=120)
        t0 = float(out.strip().splitlines()[-1])
        st = rx.stats()
        while writer is not None and rx.stats()["messages"] < n + 2:
            time.sleep(0.001)
    finally:
        rx.stop()                                   # waits until the recorder has written everything
        if writer is not None:
            writer.close()                          # end marker + fsync
        proc.kill()
    t_done = time.time() if writer is not None else t_ingested
    st = rx.stats()
    mb = n * side * side * np.dtype(dtype).itemsize / 1e6
    dt = t_done - t0
    row = {"frame": f"{side}x{side}", "dtype": dtype, "recording": "yes" if writer else "no", "frames": n,
           "fps": n / dt, "MB/s": mb / dt, "lost_to_recorder": st["recorder"]["lost"] if writer else "-",
           "gaps": st["gap_count"]}
    if writer is not None:
        (record_dir / "bench.swrec").unlink()
    return row


def bench_ingest(quick: bool = False):
    """Run the ingest benchmark; returns a :class:`stemwatch.bench.BenchReport`."""
    from stemwatch.bench import BenchReport

    base = os.environ.get("STEMWATCH_BENCH_DIR")
    tmp = Path(tempfile.mkdtemp(prefix="stemwatch-bench-", dir=base))
    counts = {512: 300 if quick else 3000, 1024: 100 if quick else 800}
    rows = []
    try:
        for record in (False, True):
            for side in (512, 1024):
                for dtype in ("float32", "uint16"):
                    n = counts[side]
                    disk = None
                    if record:                 # the disk's own speed for the same volume, just before
                        nbytes = n * side * side * np.dtype(dtype).itemsize
                        print(f"disk: writing {nbytes >> 20} MiB to {tmp} ...", file=sys.stderr, flush=True)
                        disk = _disk_speed(tmp, nbytes)
                    print(f"{side}x{side} {dtype} {'with' if record else 'without'} recording ...",
                          file=sys.stderr, flush=True)
                    row = _run(side, dtype, n, tmp if record else None)
                    row["disk_MB/s"] = disk if disk is not None else "-"
                    rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def find(side, dtype, rec):
        return next(r for r in rows if r["frame"] == f"{side}x{side}" and r["dtype"] == dtype
                    and r["recording"] == rec)

    ingest = find(512, "float32", "no")["fps"]
    rec = find(1024, "float32", "yes")
    disk = rec["disk_MB/s"]
    need = min(100 * 1024 * 1024 * 4 / 1e6, disk)
    ok = rec["MB/s"] >= 0.9 * need and rec["lost_to_recorder"] == 0
    targets = {
        "ingest 512x512 float32 >= 1000 frames/s": f"{ingest:,.0f} frames/s: {'PASS' if ingest >= 1000 else 'FAIL'}",
        f"recording 1024x1024 float32 >= min(419 MB/s, disk {disk:,.0f} MB/s) = {need:,.0f} MB/s "
        "(within 10 % measurement noise), nothing lost":
            f"{rec['MB/s']:,.0f} MB/s ({rec['fps']:.0f} frames/s), lost {rec['lost_to_recorder']}: "
            f"{'PASS' if ok else 'FAIL'}",
    }
    notes = {
        "disk_MB/s": f"the disk's sequential write speed (4 MiB writes + fsync) for the same volume, "
                     f"measured just before each recording run, in {tmp.parent}",
        "transport": "tcp://127.0.0.1, PUSH (publisher process, zero-copy) -> PULL (Receiver I/O thread)",
        "recording": "lossless mode (recorder_policy=block), until written, closed and fsync'ed",
        "cpu_count": os.cpu_count(),
    }
    return BenchReport(name="ingest", columns=["frame", "dtype", "recording", "frames", "fps", "MB/s",
                                               "disk_MB/s", "lost_to_recorder", "gaps"],
                       rows=rows, notes=notes, targets=targets)
