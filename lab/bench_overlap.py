"""Overlap on / off side by side for ``stemwatch bench pipeline`` (issue 20, engine/overlap.py).

For one frame size, in the same process and interleaved (off, on, then on, off, ...; medians over
the repeats), because the machine's load changes from minute to minute:

* offline: frames/s of a pass of :class:`engine.overlap.Overlap` over pre-rendered frames
  (completed frames / wall time between the first and last completion after two warm-up frames)
  and CPU time per frame; also overlap on with the network on every core (``ova_``);
* live: a :class:`engine.service.LiveService` fed over tcp loopback at one rate for both (1.5x the
  faster offline figure: both overloaded, so this is the live capacity), analysed frames/s and the
  p50 / p99 latency from ``t_acquired`` to the frame's events published (``latency_s["published"]``).

The load average (1 min) is read before and after.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

PS = 0.1


def offline_fps(pipe, frames: list, overlap: bool) -> tuple[float, float]:
    """Frames/s of one pass over ``frames`` (a new series), overlap on or off, and the process's CPU
    time per frame (ms, all threads: what the overlap costs in switching and spinning)."""
    from engine.overlap import Overlap
    from streamer.frame import Frame

    pipe.reset()
    done: list[tuple[float, float]] = []           # (wall, process CPU) at each completion
    with Overlap(pipe, enabled=overlap) as ov:
        for i, img in enumerate(frames):
            f = Frame(data=img, series=f"bench-overlap-{overlap}", seq=i, t_acquired=time.time(), pixel_size_A=PS)
            if ov.push(f) is not None:
                done.append((time.perf_counter(), time.process_time()))
        if ov.flush() is not None:
            done.append((time.perf_counter(), time.process_time()))
    t = done[2:]                                    # after two warm-up frames
    if len(t) < 2 or t[-1][0] <= t[0][0]:
        return float("nan"), float("nan")
    n = len(t) - 1
    return n / (t[-1][0] - t[0][0]), 1e3 * (t[-1][1] - t[0][1]) / n


def warm_overlap_network(pipe, wait_s: float = 60.0) -> bool:
    """Start the pipeline's overlap network ahead of the timed passes (its network process, where it
    has one, loads the model in ~0.5 s: a live session pays that once, not per timed pass);
    whether a process is ready (False: none, or the thread's session serves)."""
    net = pipe.overlap_network() if hasattr(pipe, "overlap_network") else None
    small = getattr(net, "small", None)
    return bool(small.start(wait_s)) if hasattr(small, "start") else False


def _load() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def compare(pipe, cfg, frames: list, live_frames: list, live, reps: int = 3, max_rate_hz: float = 200.0) -> dict:
    """Columns ``seq_*`` (overlap off) and ``ov_*`` (on) for one size; ``load_1min`` before-after.
    ``pipe``: a Pipeline on ``cfg`` (reused for the offline passes); ``live_frames`` with a
    si_3_to_4 change half-way (the same frames both ways); ``live(cfg, frames, rate_hz, change_at)``:
    one live run (lab.bench_pipeline) -> a dict with ``live_fps``, ``published_p50_ms``, ``published_p99_ms``."""
    from engine.pipeline import Pipeline

    load0 = _load()
    # "all": overlap on with the network on every core (inference.threads set: no session of its own)
    from engine.infer.backends import physical_cores

    every = Pipeline(cfg.replace(inference={"threads": physical_cores()}))
    warm_overlap_network(pipe)
    passes: dict = {False: [], True: [], "all": []}
    for r in range(reps):
        for mode in ((False, True, "all") if r % 2 == 0 else ("all", True, False)):
            passes[mode].append(offline_fps(every if mode == "all" else pipe, frames, bool(mode)))
    every.close()
    fps = {m: float(np.nanmedian([p[0] for p in v])) for m, v in passes.items()}
    cpu = {m: float(np.nanmedian([p[1] for p in v])) for m, v in passes.items()}
    rate = min(max_rate_hz, 1.5 * max(fps[False], fps[True]))
    print(f"bench pipeline: {frames[0].shape[0]}x{frames[0].shape[1]}: overlap off {fps[False]:.1f}, on "
          f"{fps[True]:.1f} frames/s offline; live at {rate:.0f} Hz both ways ...", file=sys.stderr, flush=True)
    by_mode: dict = {False: [], True: []}
    for r in range(reps):
        for mode in ((False, True) if r % 2 == 0 else (True, False)):
            c = cfg.replace(pipeline={"overlap": "on" if mode else "off"})
            by_mode[mode].append(live(c, live_frames, rate_hz=rate, change_at=len(live_frames) // 2))
    out = {"seq_fps": fps[False], "ov_fps": fps[True], "seq_cpu_ms": cpu[False], "ov_cpu_ms": cpu[True],
           "ova_fps": fps["all"], "ova_cpu_ms": cpu["all"], "live_rate_hz": rate}
    for mode, tag in ((False, "seq"), (True, "ov")):
        runs = by_mode[mode]
        out[f"{tag}_live_fps"] = float(np.median([x["live_fps"] for x in runs]))
        out[f"{tag}_p50_ms"] = float(np.median([x["published_p50_ms"] for x in runs]))
        out[f"{tag}_p99_ms"] = float(np.median([x["published_p99_ms"] for x in runs]))
    out["load_1min"] = f"{load0:.1f}-{_load():.1f}"
    return out


#: the columns :func:`compare` adds to the ``bench pipeline`` table
COLUMNS = ["seq_fps", "ov_fps", "ova_fps", "seq_cpu_ms", "ov_cpu_ms", "ova_cpu_ms", "seq_live_fps", "ov_live_fps", "seq_p50_ms", "ov_p50_ms", "seq_p99_ms", "ov_p99_ms",
           "load_1min"]
NOTES = {"seq_/ov_": "overlap off / on (engine/overlap.py), same run, interleaved, medians of the repeats: "
                     "offline frames/s of a whole pass and CPU ms per frame (all threads); live frames/s and p50/p99 latency t_acquired -> events "
                     "published, both fed at live_rate_hz = 1.5x the faster offline figure (overloaded: capacity)",
         "ov_/ova_": "overlap on: the default (the network thread on physical cores - 1 threads, its own session, "
                     "below a 256^2 model grid, 320^2 for the INT8 network, and below a 192^2 grid in a process of "
                     "its own that also finds the atoms, started before the timed passes: engine/infer/process.py; "
                     "every core from there: engine.overlap.GridRouted) / on every core at all sizes "
                     "(inference.threads set), offline only",
         "load_1min": "1-minute load average before-after the comparison (a loaded machine: compare columns, "
                      "not absolute figures)"}
