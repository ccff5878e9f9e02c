"""``stemwatch bench sim``: simulator speed on ONE core (ms per frame at 256, 512 and 1024 px).

The measurement runs in a child process pinned to one CPU with every thread pool (OpenBLAS, OpenMP)
set to one thread, so the figures are single-core whatever the machine. Rows:

* ``render``: :func:`engine.sim.imaging.render` of a random sample, imaging parameters drawn over
  the full ranges (so every frame has a different probe, tail, dose, distortions), pixel size 0.1 A;
* ``training example``: :func:`engine.sim.make_training_example` (structure + imaging), random pixel
  size in [0.05, 0.2] A/px;
* ``movie frame``: one frame of :mod:`engine.sim.movie` (structure update, thermal jitter, render,
  truth) at 0.1 A/px with random events.

Target (issue 3, criterion 8): a 512x512 frame in <= 50 ms on one core, so that the simulated
microscope streams 512x512 at 20 frames/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SIZES = (256, 512, 1024)
TARGET_MS_512 = 50.0


def _pin_one_core() -> None:
    try:
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def _time(fn, n: int, warm: int = 2) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - t))
    return out


def _measure(quick: bool) -> list[dict]:
    """Runs inside the pinned child process."""
    import numpy as np

    from engine.sim import ImagingParams, make_training_example, random_sample, render

    rows = []
    rng = np.random.default_rng(1234)
    for n in SIZES:
        reps = (4 if n == 1024 else 8) if quick else (10 if n == 1024 else 30)
        px = 0.1
        samples = [random_sample(rng, (n * px, n * px), margin_A=12.0) for _ in range(3)]
        params = [ImagingParams.random(rng) for _ in range(reps + 2)]
        it = iter(range(10 ** 9))

        def one_render():
            i = next(it)
            render(samples[i % 3], params[i % len(params)], (n, n), px, rng)

        ms = _time(one_render, reps)
        rows.append({"what": "render", "size": f"{n}x{n}", "atoms": len(samples[0]),
                     "ms_median": float(np.median(ms)), "ms_p90": float(np.percentile(ms, 90)),
                     "frames_per_s": 1e3 / float(np.median(ms))})
        ms = _time(lambda: make_training_example(rng, (n, n)), max(3, reps // 2))
        rows.append({"what": "training example", "size": f"{n}x{n}", "atoms": "",
                     "ms_median": float(np.median(ms)), "ms_p90": float(np.percentile(ms, 90)),
                     "frames_per_s": 1e3 / float(np.median(ms))})
        try:
            from engine.sim.movie import MovieSpec, simulate_movie
        except ImportError:
            continue
        import inspect

        spec_kw = dict(n_frames=None, shape_px=(n, n), pixel_size_A=0.1)
        if "seed" in inspect.signature(MovieSpec).parameters:
            spec_kw["seed"] = 7
        spec = MovieSpec(**spec_kw)
        frames = (simulate_movie(spec, 7) if len(inspect.signature(simulate_movie).parameters) > 1
                  else simulate_movie(spec))
        ms = _time(lambda: next(frames), reps)
        rows.append({"what": "movie frame", "size": f"{n}x{n}", "atoms": "",
                     "ms_median": float(np.median(ms)), "ms_p90": float(np.percentile(ms, 90)),
                     "frames_per_s": 1e3 / float(np.median(ms))})
    return rows


def bench_sim(quick: bool = False):
    """Simulator speed on one core; returns a :class:`stemwatch.bench.BenchReport`."""
    from stemwatch.bench import BenchReport

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMEXPR_NUM_THREADS="1")
    print("[bench sim] measuring in a child process pinned to one core...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, "-m", "lab.sim.bench", "--child"] + (["--quick"] if quick else []),
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench sim child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    r512 = [r for r in rows if r["what"] == "render" and r["size"] == "512x512"]
    m512 = [r for r in rows if r["what"] == "movie frame" and r["size"] == "512x512"]
    targets = {}
    if r512:
        v = r512[0]["ms_median"]
        targets["render 512x512 <= 50 ms on one core"] = f"{v:.1f} ms: {'PASS' if v <= TARGET_MS_512 else 'FAIL'}"
    if m512:
        v = m512[0]["ms_median"]
        targets["movie frame 512x512 <= 50 ms on one core (20 frames/s live)"] = \
            f"{v:.1f} ms: {'PASS' if v <= TARGET_MS_512 else 'FAIL'}"
    return BenchReport(name="sim", columns=["what", "size", "atoms", "ms_median", "ms_p90", "frames_per_s"],
                       rows=rows, notes={"threads": "1 (child process pinned to one CPU)",
                                         "params": "imaging drawn over the full ranges; 0.1 A/px for render/movie"},
                       targets=targets)


if __name__ == "__main__":
    if "--child" in sys.argv:
        _pin_one_core()
        print(json.dumps(_measure("--quick" in sys.argv)))
    else:
        from stemwatch.bench import format_table

        print(format_table(bench_sim(quick="--quick" in sys.argv)))
