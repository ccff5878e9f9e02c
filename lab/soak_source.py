"""The soak's microscope: the long-series movie and the source process that streams a movie again and
again (``python -m lab.soak source ...``, started by :func:`start_source_process`). Split out of
:mod:`lab.soak` (which re-exports these names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

#: ``--movie long`` / the bench default: a generated 512x512 movie with long series (see :func:`long_series_movie`)
LONG_MOVIE = "long"


def long_series_movie(workdir: str | Path, frames: int = 240, event_rate_per_frame: float = 0.05,
                      seed: int = 2) -> Path:
    """Simulate (once, cached in ``workdir``) the long-series soak movie and return its path.

    ``stemwatch simulate --scenario random`` at 512x512, 0.1 A/px: eight dopants (3- and 4-fold Si,
    a pair, a cluster) and random events at ``event_rate_per_frame`` (about one every 20 frames,
    i.e. 4 s at the movie's 0.2 s frame time), with exact ground truth. The bundled
    ``02_field_512`` packs nine events into 20 frames (a state lasts ~2 frames), which no analyzer
    that must skip frames can follow; a real dopant keeps its state for seconds to minutes, which
    this movie imitates. About 10 s to simulate on one core.
    """
    out = Path(workdir) / f"soak_long_{frames}_{event_rate_per_frame:g}_{seed}.swrec"
    from engine.sim.truth import truth_path

    if out.exists() and truth_path(out).exists():
        return out
    cmd = [sys.executable, "-m", "stemwatch", "simulate", "--scenario", "random", "--frames", str(int(frames)),
           "--event-rate", str(float(event_rate_per_frame)), "--seed", str(int(seed)), "--frame-time", "0.2",
           "--out", str(out), "-q"]
    subprocess.run(cmd, check=True)
    return out


def resolve_movie(movie: str | Path, workdir: str | Path) -> Path:
    """``movie`` as a path; :data:`LONG_MOVIE` is simulated into ``workdir`` (:func:`long_series_movie`)."""
    if str(movie) == LONG_MOVIE:
        return long_series_movie(workdir)
    return Path(movie)


def load_movie(movie: str | Path) -> tuple[list, dict]:
    """Frames (arrays) of a recording and its series info (shape, dtype, pixel size, frame time)."""
    from streamer.recording import iter_frames

    frames = [np.array(f.data) for f in iter_frames(movie)]
    if not frames:
        raise ValueError(f"{movie}: no frames")
    f0 = next(iter_frames(movie))
    info = {"shape": frames[0].shape, "dtype": frames[0].dtype.str, "pixel_size_A": float(f0.pixel_size_A),
            "frame_time_s": float((f0.meta or {}).get("frame_time_s", 0.2)), "n_frames": len(frames)}
    return frames, info


def run_source(movie: str | Path, endpoint: str, rate_hz: float, max_frames: int | None = None,
               duration_s: float | None = None, prefix: str = "soak", dither: bool = True, seed: int = 0,
               stop: threading.Event | None = None, out=sys.stdout, one_series: bool = False) -> dict:
    """Stream ``movie`` in loops (a new series per loop, or all in one series with ``one_series``) at
    ``rate_hz`` (inf: as fast as the socket takes them) until ``max_frames`` frames or
    ``duration_s`` seconds. Prints ``bound ENDPOINT`` once bound and a JSON report at the end (also
    returned)."""
    from streamer import Publisher

    frames, info = load_movie(movie)
    stop = stop or threading.Event()
    rng = np.random.default_rng(seed)
    integer = np.dtype(info["dtype"]).kind in "ui"
    pub = Publisher(endpoint, bind=True, sndhwm=16, send_timeout_s=None)   # waits for the analyzer
    print(f"bound {pub.endpoint}", file=out, flush=True)
    sent, late, loop = 0, 0, 0
    series_sent: list = []
    t0 = time.monotonic()
    period = 1.0 / rate_hz if np.isfinite(rate_hz) and rate_hz > 0 else 0.0
    done = False
    try:
        while not done and not stop.is_set():
            sid = prefix if one_series else f"{prefix}-{loop:05d}"
            if loop == 0 or not one_series:
                pub.start_series(sid, info["shape"], info["dtype"], info["pixel_size_A"],
                                 frame_time_s=period or info["frame_time_s"], meta={"source": "lab.soak", "loop": loop})
                n = 0
            for img in frames:
                if stop.is_set() or (max_frames is not None and sent >= max_frames) or \
                        (duration_s is not None and time.monotonic() - t0 >= duration_s):
                    done = True
                    break
                if period:
                    delay = t0 + sent * period - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    elif delay < -period:
                        late += 1
                if dither and integer:
                    img = img + rng.integers(0, 4, size=img.shape, dtype=img.dtype)
                elif dither:
                    img = img + rng.integers(0, 4, size=img.shape).astype(img.dtype)
                pub.send_frame(img, seq=n, t_acquired=time.time())
                sent += 1
                n += 1
            if done or not one_series:
                pub.end_series()
                series_sent.append([sid, n])
            loop += 1
    finally:
        wall = time.monotonic() - t0
        pub.close()
    report = {"frames_sent": sent, "series": series_sent, "wall_s": wall, "late_frames": late,
              "rate_hz": rate_hz, "movie_frames": info["n_frames"], "shape": list(info["shape"]),
              "dtype": info["dtype"]}
    print(json.dumps(report), file=out, flush=True)
    return report


def start_source_process(movie: str | Path, rate_hz: float, max_frames: int | None, duration_s: float | None,
                         prefix: str = "soak", seed: int = 0, one_series: bool = False,
                         bind: str = "tcp://127.0.0.1:*") -> tuple[subprocess.Popen, str]:
    """Start the source in its own process, bound to ``bind``; returns (process, bound endpoint)."""
    cmd = [sys.executable, "-m", "lab.soak", "source", "--movie", str(movie), "--rate", str(rate_hz),
           "--prefix", prefix, "--seed", str(seed), "--bind", bind] + (["--one-series"] if one_series else [])
    if max_frames is not None:
        cmd += ["--frames", str(int(max_frames))]
    if duration_s is not None:
        cmd += ["--duration-s", str(float(duration_s))]
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
    line = p.stdout.readline().strip()
    if not line.startswith("bound "):
        p.kill()
        raise RuntimeError(f"soak source did not start: {line!r}")
    return p, line.split(" ", 1)[1]
