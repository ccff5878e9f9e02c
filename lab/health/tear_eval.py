"""Scan tears and line jumps as ``glitch`` (issue 13 criterion 2): detection and false-flag rates.

Laboratory code. Clean simulated frames of two kinds, each also given a scan tear (a band of 8-25 %
of the rows shifted by +-2 or +-3 px, edge pixels repeated, as :meth:`engine.sim.movie.MovieSimulator`
makes them) and a line jump (every row from a random one on shifted by +-2 or +-3 px), all analysed by
:class:`engine.pipeline.Pipeline` at the declared pixel size:

* ``movie``: 16 held-out-style movies (:func:`lab.alarm_eval.movie_spec`: HAADF and MAADF, 3e4, 1e5,
  3e5, 1e6 e/A^2, drift 0.5 and 2 A/frame turning back within 6 A, 352^2 at 0.1 A/px, three dopants),
  9 frames each, seeds 556000-556015 (not the held-out sets);
* ``single``: 96 frames of :func:`engine.sim.make_training_example` with the movies' imaging (HAADF or
  MAADF), 3e4-1e6 e/A^2, 0.04-0.2 A/px, 256^2-512^2, strained and rippled lattice, in-frame drift up to
  2 A, a hole in every 4th and contamination in every 3rd.

``--realdata DIR`` adds the real frames of DIR (evaluation only: nothing derived from them is written).

    PYTHONPATH=$PWD python -m lab.health.tear_eval [--realdata ../shared/realdata]
    PYTHONPATH=$PWD python -m lab.health.tear_eval --cost      # CPU ms per 512^2 frame, old vs new

``--cost``: :meth:`HealthMonitor.before` with the tear test off (``tear_shift_px`` 0, the code before it)
and on, interleaved in one process on 512^2 frames (CPU time, medians), and the atom test on the
atoms the pipeline finds in one of them.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from engine.sim.movie import shift_rows


def shift_band(img: np.ndarray, rng: np.random.Generator, to_end: bool = False):
    """A scan tear (or, ``to_end``, a line jump: every row from one on): ``(image, (row, rows, shift))``."""
    h, _ = img.shape
    band = max(2, int(h * rng.uniform(0.08, 0.25)))
    r0 = int(rng.integers(0, max(1, h - band)))
    if to_end:
        r0 = int(rng.integers(h // 8, h - h // 8))
        band = h - r0
    shift = int(rng.choice([-3, -2, 2, 3]))
    return shift_rows(img, r0, band, shift), (r0, band, shift)


def simulated_frames():
    """``[(group, image, pixel_size_A)]``: the movie and single frames of the module docstring."""
    from engine.sim import make_training_example
    from engine.sim.movie import default_imaging, run_movie
    from lab.alarm_eval import CONTRASTS, movie_spec

    out = []
    k = 0
    for contrast in ("HAADF", "MAADF"):
        for dose in (3e4, 1e5, 3e5, 1e6):
            for drift in (0.5, 2.0):
                spec = dataclasses.replace(movie_spec(contrast, dose, 556000 + k, 9, drift), glitches=[])
                imgs, _ = run_movie(spec)
                out += [(f"movie {contrast} {dose:.0e}", im, 0.1) for im in imgs]
                k += 1
    rng = np.random.default_rng(557000)
    for j in range(96):
        contrast = ("HAADF", "MAADF")[j % 2]
        dose = float(np.exp(rng.uniform(np.log(3e4), np.log(1e6))))
        ps = float(np.exp(rng.uniform(np.log(0.04), np.log(0.2))))
        n = int(rng.choice([256, 384, 512]))
        ang, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 2.0)
        params = dataclasses.replace(default_imaging(dose), **CONTRASTS[contrast],
                                     drift_in_frame_A=(float(d * np.cos(ang)), float(d * np.sin(ang))))
        ex = make_training_example(rng, shape_px=(n, n), pixel_size_A=ps, params=params,
                                   holes=bool(j % 4 == 0), contamination=bool(j % 3 == 0), distort=True)
        im = np.clip(np.rint(ex.image), 0, 65535).astype(np.uint16)
        out.append(("single 0.07-0.2 A/px" if ps >= 0.07 else "single 0.04-0.07 A/px", im, ps))
    return out


def real_frames(folder: Path):
    items = [("aicr_graphene_si_frames.npz", k, ps) for k, ps in
             (("G_Si_2nm_image", 0.076), ("G_dimSi_image", 0.038), ("G_trimSi_image", 0.038),
              ("G_Si_4fold_image", 0.039))]
    items += [("aicr_graphene_grainboundary.npz", "G_GB_4nm_image", 0.078),
              ("aicr_graphene_grainboundary.npz", "G_GB_6nm_image", 0.117)]
    return [("real", np.asarray(np.load(folder / f)[k], np.float32), ps) for f, k, ps in items]


def evaluate(frames, seed: int = 424242) -> dict:
    """Per group: frames, clean frames judged ``glitch``, tears and line jumps judged ``glitch``."""
    from engine.pipeline import Pipeline
    from stemwatch.config import Config
    from streamer.frame import Frame

    rng = np.random.default_rng(seed)
    table: dict = {}
    with Pipeline(Config().replace(health={"scale": "declared"})) as pipe:
        for n, (group, im, ps) in enumerate(frames):
            tear, _ = shift_band(im, rng)
            jump, _ = shift_band(im, rng, to_end=True)
            row = table.setdefault(group, {"frames": 0, "clean_glitch": 0, "tear_glitch": 0, "jump_glitch": 0})
            row["frames"] += 1
            for name, x in (("clean", im), ("tear", tear), ("jump", jump)):
                h = pipe.process(Frame(x, f"f{n}-{name}", 0, 0.0, ps)).health
                row[f"{name}_glitch"] += int("glitch" in h.verdicts)
    return table


def cost(repeats: int = 300) -> dict:
    """CPU ms (medians): ``before_off``, ``before_on``, their paired ``difference`` and ``confirm``."""
    import os
    import time

    from engine.health.monitor import HealthMonitor
    from engine.health.tear import confirm_tear
    from engine.pipeline import Pipeline
    from engine.sim.movie import MovieSpec, run_movie
    from stemwatch.config import Config, HealthConfig
    from streamer.frame import Frame

    frames, _ = run_movie(MovieSpec(n_frames=3, shape_px=(512, 512), pixel_size_A=0.1, seed=512))
    mons = {"off": HealthMonitor(HealthConfig(tear_shift_px=0)), "on": HealthMonitor(HealthConfig())}
    for m in mons.values():
        for i in range(3):
            m.before(Frame(frames[i], "b", i, float(i), 0.1))
    ts: dict = {"off": [], "on": []}
    for k in range(3, 3 + repeats):
        for name in (("off", "on") if k % 2 else ("on", "off")):
            f = Frame(frames[k % 3], "b", k, float(k), 0.1)
            t = time.process_time()
            mons[name].before(f)
            ts[name].append(time.process_time() - t)
    with Pipeline(Config().replace(health={"scale": "declared"})) as pipe:
        chem = pipe.process(Frame(frames[0], "c", 0, 0.0, 0.1)).chemistry
    tc = []
    for _ in range(max(10, repeats // 3)):
        t = time.process_time()
        confirm_tear(((200, 2.0),), chem.atoms.xy_px, chem.bonds, 512, 0.1)
        tc.append(time.process_time() - t)
    off, on = np.array(ts["off"]), np.array(ts["on"])
    return {"before_off_ms": 1e3 * float(np.median(off)), "before_on_ms": 1e3 * float(np.median(on)),
            "difference_ms": 1e3 * float(np.median(on - off)), "confirm_ms": 1e3 * float(np.median(tc)),
            "atoms": len(chem.atoms), "bonds": len(chem.bonds), "load_average": os.getloadavg()[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--realdata", type=Path, default=None, help="also the real frames in this folder")
    ap.add_argument("--cost", action="store_true", help="instead: CPU ms per 512^2 frame, tear test off vs on")
    a = ap.parse_args(argv)
    if a.cost:
        print(cost())
        return 0
    frames = simulated_frames()
    if a.realdata is not None:
        frames += real_frames(a.realdata)
    table = evaluate(frames)
    print("| frames | n | clean judged glitch | scan tears judged glitch | line jumps judged glitch |")
    print("|---|---|---|---|---|")
    for g, r in table.items():
        print(f"| {g} | {r['frames']} | {r['clean_glitch']} | {r['tear_glitch']} | {r['jump_glitch']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
