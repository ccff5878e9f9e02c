"""Cost of the material verdict (engine.health.material.classify_material) per frame.

Laboratory code: not a test (no wall-clock thresholds in the default test run). Renders a few
simulated 512^2 frames (graphene, MoS2, amorphous, vacuum), classifies each many times and prints the
median and the minimum wall time per call, and the mean CPU time of the calling thread
(``time.thread_time``: what the call costs on its core, whatever else the machine runs; on a loaded
machine the wall times are the CPU time stretched by the other processes), single-threaded FFT as
in the pipeline.

``--against REF`` also loads ``engine/health/material.py`` as it was at git revision REF and times
both versions interleaved (old, new, old, new, ... on the same frames in the same process), so a
loaded machine slows both alike; the table then gives both and their ratio.

    python -m lab.material_bench [--size 512] [--repeat 200] [--against HEAD~3]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MATERIALS = ("graphene", "MoS2", "amorphous", "vacuum")


def load_revision(ref: str):
    """engine/health/material.py at git revision ``ref`` as a module of its own (with the
    ``engine/health/material_*.py`` modules it was split into, from the same revision)."""
    root = Path(__file__).resolve().parents[1]

    def show(path):
        return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=root, capture_output=True, text=True,
                              check=True).stdout

    names = subprocess.run(["git", "ls-tree", "--name-only", ref, "engine/health/"], cwd=root, capture_output=True,
                           text=True, check=True).stdout.split()
    parts = sorted(Path(n).stem for n in names if Path(n).name.startswith("material_") and n.endswith(".py"))
    pkg = f"_material_{abs(hash(ref))}"
    tmp = Path(tempfile.mkdtemp()) / pkg
    tmp.mkdir()
    (tmp / "__init__.py").write_text("")
    for stem in ["material"] + parts:
        src = show(f"engine/health/{stem}.py")
        for p in parts:                          # the sibling modules of that revision, not today's
            src = src.replace(f"from engine.health.{p} import", f"from {pkg}.{p} import")
        (tmp / f"{stem}.py").write_text(src)
    sys.path.insert(0, str(tmp.parent))
    try:
        return importlib.import_module(f"{pkg}.material")
    finally:
        sys.path.remove(str(tmp.parent))


def _frames(size: int, pixel_size_A: float):
    from engine.sim.materials import material_example

    return [(m, material_example(np.random.default_rng(i), m, (size, size), pixel_size_A,
                                 dose_range=(1e5, 1e5)).image) for i, m in enumerate(MATERIALS)]


def bench(size: int = 512, repeat: int = 200, pixel_size_A: float = 0.1, against=None) -> dict:
    from engine.health.material import classify_material

    fns = {"new": classify_material}
    if against is not None:
        fns["old"] = against.classify_material
    out = {}
    for material, img in _frames(size, pixel_size_A):
        for fn in fns.values():
            for _ in range(5):
                fn(img, pixel_size_A)
        t = {k: np.empty(repeat) for k in fns}
        c = {k: np.empty(repeat) for k in fns}
        for i in range(repeat):
            for k, fn in fns.items():               # interleaved: old and new see the same load
                c0 = time.thread_time()
                t0 = time.perf_counter()
                fn(img, pixel_size_A)
                t[k][i] = time.perf_counter() - t0
                c[k][i] = time.thread_time() - c0
        # thread_time ticks coarsely on some kernels: the mean over many calls is the honest figure
        out[material] = {k: {"median_ms": 1e3 * float(np.median(t[k])), "min_ms": 1e3 * float(t[k].min()),
                             "p90_ms": 1e3 * float(np.percentile(t[k], 90)), "cpu_ms": 1e3 * float(c[k].mean())}
                         for k in fns}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="frame side in px (default 512)")
    ap.add_argument("--repeat", type=int, default=200, help="calls per frame and version (default 200)")
    ap.add_argument("--pixel-size", type=float, default=0.1, help="A/px of the frames (default 0.1)")
    ap.add_argument("--against", default=None, metavar="REF",
                    help="also time engine/health/material.py at this git revision, interleaved")
    ap.add_argument("--json", default=None, help="write the figures here")
    a = ap.parse_args(argv)
    against = load_revision(a.against) if a.against else None
    res = bench(a.size, a.repeat, a.pixel_size, against)
    print(f"classify_material on {a.size}x{a.size} frames at {a.pixel_size} A/px, {a.repeat} calls each "
          "(ms per call)")
    print("| frame | version | CPU time (mean) | wall min | wall median | wall p90 |\n|---|---|---|---|---|---|")
    for k, v in res.items():
        for ver, f in v.items():
            name = "current" if ver == "new" else a.against
            print(f"| {k} | {name} | {f['cpu_ms']:.2f} | {f['min_ms']:.2f} | {f['median_ms']:.2f} | {f['p90_ms']:.2f} |")
        if "old" in v:
            print(f"| {k} | old / current | {v['old']['cpu_ms'] / v['new']['cpu_ms']:.1f}x | "
                  f"{v['old']['min_ms'] / v['new']['min_ms']:.1f}x | "
                  f"{v['old']['median_ms'] / v['new']['median_ms']:.1f}x | |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
