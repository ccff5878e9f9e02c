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

``--series N`` times the pipeline's per-series cadence instead (:mod:`engine.health.material_cadence`):
a simulated N-frame graphene movie (drift 0.5 A/frame, Si dopants; ``--switch MATERIAL`` replaces its
second half by another material in the same series, no jump) is judged frame by frame the old way
(:func:`engine.pipeline.frame_material` on every frame) and the new way (``MaterialCadence.verdict``),
interleaved frame by frame in this process, ``--repeat`` times (a new series each time); CPU time of
the process (``time.process_time``) per frame, amortised over the series (median over the repeats),
the guard's own cost (median over the carried-over frames) and the number of full checks:

    python -m lab.material_bench --series 50 --repeat 5 [--pixel-size 0.04] [--switch MoS2]

``--movie beside_MoS2`` judges a drifting field of graphene beside a MoS2 flake instead (engine.sim
``MaterialMovie`` ``graphene_patch`` with ``other="MoS2"``, the flake over 40 % of the simulated sample; at
0.15 A/px with ``--seed 1`` every frame's full check gives a graphene mask): a masked series. With
``--against REV`` the old way is ``engine/health/material_cadence.py`` as it was at git revision REV (before
the mask was carried: a full check on every frame while one was in use), interleaved frame by frame with
today's cadence; the table gives both and their ratio:

    python -m lab.material_bench --series 50 --repeat 5 --movie beside_MoS2 --pixel-size 0.15 --against dc1f23c

``--movie beside_MoS2`` without ``--series`` times the full check alone (``classify_material``) on the first
10 frames of that movie, ``--repeat`` passes (with ``--against REV``: that revision's, interleaved):

    python -m lab.material_bench --movie beside_MoS2 --pixel-size 0.15 --repeat 10 --against 42987a4

``--pipeline N`` runs ``Pipeline.process`` (CPU backend, overlap off) on the N frames of ``stemwatch bench
pipeline``'s 512^2 movie with a full material check on every frame (``material_recheck_every_n_frames``
1: the behaviour before the cadence) and with the default cadence, the two pipelines interleaved frame
by frame in this process, and prints the median time per frame and of its material step:

    python -m lab.material_bench --pipeline 24 --repeat 2
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


def bench_movie(images, pixel_size_A: float, repeat: int = 5, against=None) -> dict:
    """classify_material (and ``against``'s, interleaved frame by frame) on every frame of a movie, ``repeat``
    passes: CPU time per call (``time.thread_time``), the median and mean over all calls."""
    from engine.health.material import classify_material

    fns = {"new": classify_material}
    if against is not None:
        fns["old"] = against.classify_material
    for fn in fns.values():
        fn(images[0], pixel_size_A)
    c = {k: [] for k in fns}
    for _ in range(repeat):
        for img in images:
            for k, fn in fns.items():
                c0 = time.thread_time()
                fn(img, pixel_size_A)
                c[k].append(time.thread_time() - c0)
    return {k: {"cpu_ms_median": 1e3 * float(np.median(v)), "cpu_ms_mean": 1e3 * float(np.mean(v)), "calls": len(v)}
            for k, v in c.items()}


def load_cadence(ref: str):
    """``engine/health/material_cadence.py`` at git revision ``ref`` as a module of its own, with the
    ``engine/health/material*.py`` of that revision (:func:`load_revision`: the full check as it was too);
    its ``frame_material`` is :func:`engine.pipeline.frame_material` with that revision's full check."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    material = load_revision(ref)
    pkg = material.__name__.rsplit(".", 1)[0]
    src = subprocess.run(["git", "show", f"{ref}:engine/health/material_cadence.py"], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    src = src.replace("from engine.health.material", f"from {pkg}.material")     # (and its material_* siblings)
    path = Path(tempfile.mkdtemp()) / "material_cadence_ref.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"_cadence_{abs(hash(ref))}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                     # (dataclasses look their module up there)
    sys.path.insert(0, str(Path(material.__file__).parents[1]))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(Path(material.__file__).parents[1]))

    def frame_material(frame):                       # engine.pipeline.frame_material with that revision's check
        from engine.pipeline import MIN_SIDE_PX

        data = np.asarray(frame.data)
        if data.ndim != 2 or min(data.shape) < MIN_SIDE_PX:
            return material.MaterialVerdict("graphene", "frame too small for a material verdict: assumed graphene",
                                            graphene_fraction=1.0)
        return material.classify_material(data, float(frame.pixel_size_A) if frame.pixel_size_A else None)

    mod.frame_material = frame_material
    return mod


def series_frames(n: int, size: int, pixel_size_A: float, switch: str | None = None, seed: int = 1,
                  imaging: str | None = None, movie: str = "graphene"):
    """An n-frame simulated graphene movie (drift, dopants) as pipeline Frames of one series; with
    ``switch`` its second half shows that material (same imaging and drift; no jump). ``movie``
    ``beside_MoS2``: graphene beside a MoS2 flake (the flake over 40 % of the simulated sample)."""
    import dataclasses

    from engine.sim.materials import MaterialMovie
    from engine.sim.movie import MovieSpec, simulate_movie
    from streamer.frame import Frame

    dop = ("si3",) if size * pixel_size_A < 40 else ("si3", "si3", "si4")
    spec = MovieSpec(n_frames=n, shape_px=(size, size), pixel_size_A=pixel_size_A, dose_e_per_A2=1e5,
                     imaging=imaging, drift_A_per_frame=(0.45, 0.25), dopants=dop, first_dopant_centre=False,
                     seed=seed)
    if movie == "beside_MoS2":
        imgs = [img for img, _ in MaterialMovie(spec, "graphene_patch", other="MoS2", fraction=0.4).frames()]
    elif movie == "graphene":
        imgs = [img for img, _ in simulate_movie(spec)]
    else:
        raise ValueError(f"movie must be graphene or beside_MoS2, got {movie!r}")
    if switch:
        k = n // 2
        other = [img for img, _ in MaterialMovie(dataclasses.replace(spec, n_frames=n - k), switch).frames()]
        imgs = imgs[:k] + other
    return [Frame(data=img, series="bench", seq=i, t_acquired=float(i), pixel_size_A=pixel_size_A)
            for i, img in enumerate(imgs)]


def bench_series(frames, repeat: int = 5, every_n: int | None = None, against=None) -> dict:
    """Old (full check on every frame; or ``against``'s ``MaterialCadence``, a material_cadence module of
    another revision: :func:`load_cadence`) vs new (today's cadence), interleaved frame by frame."""
    from engine.health.material_cadence import MaterialCadence
    from engine.health.monitor import FrameHealth
    from engine.pipeline import frame_material
    from stemwatch.config import Config

    n = every_n or Config().chemistry.material_recheck_every_n_frames
    cad = MaterialCadence(n)
    ref = against.MaterialCadence(n) if against is not None else None

    def old_way(f):
        return ref.verdict(f, FrameHealth(), against.frame_material) if ref is not None else frame_material(f)

    for f in frames[:3]:                                  # warm-up (imports, caches)
        old_way(f)
        cad.verdict(f, FrameHealth(), frame_material)
    old, new, guard, fulls, fired, masked, old_fulls, old_guard = [], [], [], [], [], [], [], []
    for _ in range(repeat):
        cad.reset()
        if ref is not None:
            ref.reset()
        to, tn = np.empty(len(frames)), np.empty(len(frames))
        nm = 0
        for i, f in enumerate(frames):
            c0 = time.process_time()
            vo = old_way(f)
            c1 = time.process_time()
            v = cad.verdict(f, FrameHealth(), frame_material)
            c2 = time.process_time()
            to[i], tn[i] = c1 - c0, c2 - c1
            nm += int(v.is_graphene and v.mask is not None and v.graphene_fraction < cad.mask_below)
            if v.carried_over:
                guard.append(c2 - c1)
            if getattr(vo, "carried_over", False):
                old_guard.append(c1 - c0)
        old.append(to.mean())
        new.append(tn.mean())
        fulls.append(cad.s.full_checks)
        fired.append(cad.s.guard_fired + cad.s.drift_lost)
        masked.append(nm)
        old_fulls.append(ref.s.full_checks if ref is not None else len(frames))
    return {"frames": len(frames), "every_n": n, "old_ms": 1e3 * float(np.median(old)),
            "new_ms": 1e3 * float(np.median(new)), "guard_ms": 1e3 * float(np.median(guard)) if guard else None,
            "old_guard_ms": 1e3 * float(np.median(old_guard)) if old_guard else None,
            "full_checks": int(np.median(fulls)), "guard_fired": int(np.median(fired)),
            "old_full_checks": int(np.median(old_fulls)), "masked_frames": int(np.median(masked)),
            "ratio_per_repeat": [float(a / b) for a, b in zip(old, new)]}


def bench_pipeline_cadence(n: int = 24, size: int = 512, repeat: int = 2) -> dict:
    """Pipeline.process with the full check on every frame vs the default cadence, interleaved."""
    from engine.pipeline import Pipeline
    from engine.sim.movie import MovieSpec, simulate_movie
    from stemwatch.config import Config
    from streamer.frame import Frame

    PS = 0.1               # the movie of stemwatch bench pipeline (lab/bench_pipeline.py) at 512^2: 5 Si
    spec = MovieSpec(n_frames=n, shape_px=(size, size), pixel_size_A=PS, dopants=("si3",) * 5,
                     drift_A_per_frame=(0.15, 0.08), drift_bound_A=8.0, seed=0)
    frames = [img for img, _ in simulate_movie(spec)]
    cfg = Config().replace(inference={"threads": 2})
    pipes = {"every frame": Pipeline(cfg.replace(chemistry={"material_recheck_every_n_frames": 1})),
             "cadence": Pipeline(cfg)}
    wall = {k: [] for k in pipes}
    cpu = {k: [] for k in pipes}
    mat = {k: [] for k in pipes}
    for p in pipes.values():                                   # warm-up
        p.process(Frame(data=frames[0], series="warm", seq=0, t_acquired=time.time(), pixel_size_A=PS))
    for r in range(repeat):
        for i, img in enumerate(frames):
            for k, p in pipes.items():
                f = Frame(data=img, series=f"bench{r}", seq=i, t_acquired=time.time(), pixel_size_A=PS)
                c0, t0 = time.process_time(), time.perf_counter()
                res = p.process(f)
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
                mat[k].append(res.timings_s.get("material", 0.0))
    for p in pipes.values():
        p.close()
    return {k: {"frames_per_s": 1.0 / float(np.median(wall[k])), "wall_ms": 1e3 * float(np.median(wall[k])),
                "cpu_ms": 1e3 * float(np.median(cpu[k])), "material_ms_median": 1e3 * float(np.median(mat[k])),
                "material_ms_mean": 1e3 * float(np.mean(mat[k]))} for k in pipes}


def _write_json(res: dict, path: str | None) -> int:
    """Write the figures to ``path`` (if given); the command's exit status."""
    if path:
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="frame side in px (default 512)")
    ap.add_argument("--repeat", type=int, default=200, help="calls per frame and version (default 200)")
    ap.add_argument("--pixel-size", type=float, default=0.1, help="A/px of the frames (default 0.1)")
    ap.add_argument("--against", default=None, metavar="REF",
                    help="also time engine/health/material.py at this git revision, interleaved (with --series: "
                         "engine/health/material_cadence.py of that revision as the old way)")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--series", type=int, default=0, metavar="N",
                    help="time the per-series cadence on an N-frame simulated graphene movie instead")
    ap.add_argument("--switch", default=None, metavar="MATERIAL",
                    help="with --series: the movie's second half shows this material (MoS2, WS2, hBN, amorphous, vacuum)")
    ap.add_argument("--imaging", choices=("default", "random"), default="default",
                    help="with --series: the movie's imaging (random: drawn over the simulator's ranges from --seed)")
    ap.add_argument("--seed", type=int, default=1, help="with --series: the movie's seed (default 1)")
    ap.add_argument("--movie", choices=("graphene", "beside_MoS2"), default="graphene",
                    help="with --series: graphene (default) or graphene beside a MoS2 flake (a masked series)")
    ap.add_argument("--every-n", type=int, default=None,
                    help="with --series: full check at least every this many frames (default: the Config's)")
    ap.add_argument("--pipeline", type=int, default=0, metavar="N",
                    help="time Pipeline.process on N 512^2 bench frames, full check every frame vs the cadence")
    a = ap.parse_args(argv)
    if a.movie != "graphene" and not a.series:
        import os

        frames = series_frames(10, a.size, a.pixel_size, None, a.seed, "random" if a.imaging == "random" else None,
                               a.movie)
        res = bench_movie([f.data for f in frames], a.pixel_size, a.repeat, load_revision(a.against) if a.against else None)
        print(f"classify_material on the 10 frames of a {a.size}x{a.size} {a.movie} movie at {a.pixel_size} A/px "
              f"(seed {a.seed}), {a.repeat} passes, interleaved; load average {os.getloadavg()[0]:.1f}")
        print("| version | CPU ms per call (median) | (mean) |\n|---|---|---|")
        for k, v in res.items():
            print(f"| {'current' if k == 'new' else a.against} | {v['cpu_ms_median']:.2f} | {v['cpu_ms_mean']:.2f} |")
        if "old" in res:
            print(f"| {a.against} / current | {res['old']['cpu_ms_median'] / res['new']['cpu_ms_median']:.2f} | "
                  f"{res['old']['cpu_ms_mean'] / res['new']['cpu_ms_mean']:.2f} |")
        return _write_json(res, a.json)
    if a.pipeline:
        import os

        res = bench_pipeline_cadence(a.pipeline, a.size, a.repeat)
        print(f"Pipeline.process on {a.pipeline} frames {a.size}x{a.size} (stemwatch bench pipeline's movie), "
              f"{a.repeat} passes, interleaved; load average {os.getloadavg()[0]:.1f}")
        print("| material check | frames/s (median wall) | CPU ms/frame (process) | material ms (median / mean) |\n"
              "|---|---|---|---|")
        for k, v in res.items():
            print(f"| {k} | {v['frames_per_s']:.1f} | {v['cpu_ms']:.1f} | {v['material_ms_median']:.2f} / "
                  f"{v['material_ms_mean']:.2f} |")
        return _write_json(res, a.json)
    if a.series:
        import os

        frames = series_frames(a.series, a.size, a.pixel_size, a.switch, a.seed,
                               "random" if a.imaging == "random" else None, a.movie)
        ref = load_cadence(a.against) if a.against else None
        res = bench_series(frames, a.repeat, a.every_n, ref)
        old_name = f"old: cadence of {a.against}" if a.against else "old: every frame"
        print(f"material verdict on a {res['frames']}-frame {a.size}x{a.size} {a.movie} series at {a.pixel_size} A/px "
              f"({a.imaging} imaging, seed {a.seed})"
              f"{' switching to ' + a.switch + ' halfway' if a.switch else ''}; {a.repeat} repeats, interleaved; "
              f"load average {os.getloadavg()[0]:.1f}; frames with a mask in use (new): {res['masked_frames']}")
        print(f"| per frame (CPU ms, process_time, median of the series means) | {old_name} | new: cadence |\n|---|---|---|")
        print(f"| amortised | {res['old_ms']:.2f} | {res['new_ms']:.2f} |")
        r = res["ratio_per_repeat"]
        print(f"| old / new (per repeat: median, min-max) | {np.median(r):.2f} ({min(r):.2f}-{max(r):.2f}) | |")
        og = f"{res['old_guard_ms']:.2f}" if res["old_guard_ms"] is not None else ""
        print(f"| guard alone (carried-over frames, median) | {og} | {res['guard_ms']:.2f} |" if res["guard_ms"] is not None
              else "| guard alone | | (no carried-over frame) |")
        print(f"| full checks per series | {res['old_full_checks']} | {res['full_checks']} (every {res['every_n']}; "
              f"guard or drift fired {res['guard_fired']}) |")
        return _write_json(res, a.json)
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
    return _write_json(res, a.json)


if __name__ == "__main__":
    sys.exit(main())
