"""Cost of the material verdict (engine.health.material.classify_material) per frame.

Laboratory code: not a test (no wall-clock thresholds in the default test run). Renders a few
simulated 512^2 frames (graphene, MoS2, amorphous, vacuum), classifies each many times and prints the
median and the minimum wall time per call, and the median CPU time of the calling thread
(``time.thread_time``: what the call costs on its core, whatever else the machine runs; on a loaded
machine the wall times are the CPU time stretched by the other processes), single-threaded FFT as
in the pipeline.

    python -m lab.material_bench [--size 512] [--repeat 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def bench(size: int = 512, repeat: int = 200, pixel_size_A: float = 0.1) -> dict:
    from engine.health.material import classify_material
    from engine.sim.materials import material_example

    out = {}
    for i, material in enumerate(("graphene", "MoS2", "amorphous", "vacuum")):
        ex = material_example(np.random.default_rng(i), material, (size, size), pixel_size_A, dose_range=(1e5, 1e5))
        img = ex.image
        for _ in range(5):
            classify_material(img, pixel_size_A)
        t = np.empty(repeat)
        c = np.empty(repeat)
        for k in range(repeat):
            c0 = time.thread_time()
            t0 = time.perf_counter()
            classify_material(img, pixel_size_A)
            t[k] = time.perf_counter() - t0
            c[k] = time.thread_time() - c0
        # thread_time ticks coarsely on some kernels: the mean over many calls is the honest figure
        out[material] = {"median_ms": 1e3 * float(np.median(t)), "min_ms": 1e3 * float(t.min()),
                         "p90_ms": 1e3 * float(np.percentile(t, 90)), "cpu_ms": 1e3 * float(c.mean())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    res = bench(a.size, a.repeat)
    print(f"classify_material on {a.size}x{a.size} frames, {a.repeat} calls each (ms per call)")
    print("| frame | CPU time (mean) | wall min | wall median | wall p90 |\n|---|---|---|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v['cpu_ms']:.2f} | {v['min_ms']:.2f} | {v['median_ms']:.2f} | {v['p90_ms']:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
