"""How often the material guard (engine.health.material_cadence) fires: on graphene series (it should
not) and on the first frame of another material in the same series (it must).

Laboratory code. For each case (pixel size x dose x seed, the simulator's random imaging), a graphene
movie drifting 0.5 A/frame with Si dopants and the beam current varying +-15 % from frame to frame
is judged by the guard against its first frame's full check; then the first frame of MoS2, WS2, hBN,
amorphous carbon and vacuum rendered with the same imaging (engine.sim.materials.MaterialMovie) is
judged against the same reference. Prints per case the guard's fires on the graphene frames, which
materials it missed, and the totals.

    python -m lab.material_guard_eval [--frames 20] [--seeds 1] [--size 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

PIXEL_SIZES_A = (0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)
DOSES = (1e4, 1e5)
OTHERS = ("MoS2", "WS2", "hBN", "amorphous", "vacuum")


def run(frames: int = 20, seeds: int = 1, size: int = 512, pixel_sizes=PIXEL_SIZES_A, doses=DOSES) -> dict:
    from engine.health.material_cadence import fingerprint, guard
    from engine.pipeline import frame_material
    from engine.sim.materials import MaterialMovie
    from engine.sim.movie import MovieSpec, simulate_movie
    from streamer.frame import Frame

    rows = []
    for px in pixel_sizes:
        for dose in doses:
            for seed in range(seeds):
                s = 1000 + 97 * seed + int(px * 1000) + int(np.log10(dose))
                spec = MovieSpec(n_frames=frames, shape_px=(size, size), pixel_size_A=px, dose_e_per_A2=dose,
                                 imaging="random", drift_A_per_frame=(0.45, 0.25), dopants=("si3",),
                                 first_dopant_centre=False, seed=s)
                rng = np.random.default_rng(s)
                imgs = [(img.astype(np.float32) - np.float32(img.min())) * np.float32(rng.uniform(0.85, 1.15))
                        for img, _ in simulate_movie(spec)]
                v = frame_material(Frame(imgs[0], "g", 0, 0.0, px))
                fp = fingerprint(imgs[0], v)
                unwatched = fp.spots is None and v.verdict in ("graphene", "not_graphene")
                rows.append({"pixel_size_A": px, "dose": dose, "seed": s, "verdict": v.verdict,
                             "spots": fp.spots is not None, "contrast": fp.contrast, "graphene_frames": 0,
                             "fired": [], "missed": [], "unwatched": unwatched})
                if unwatched:                # the cadence checks every frame in full (no guard)
                    continue
                fired = [k for k, img in enumerate(imgs[1:], 1) if guard(img, fp)[0]]
                missed = []
                for m in OTHERS:
                    o = next(iter(MaterialMovie(dataclasses.replace(spec, n_frames=1), m).frames()))[0]
                    if not guard(o, fp)[0]:
                        missed.append(m)
                rows[-1].update(graphene_frames=len(imgs) - 1, fired=fired, missed=missed)
    return {"rows": rows,
            "graphene_fired": sum(len(r["fired"]) for r in rows),
            "graphene_frames": sum(r["graphene_frames"] for r in rows),
            "others_missed": sum(len(r["missed"]) for r in rows),
            "others": sum(not r["unwatched"] for r in rows) * len(OTHERS),
            "unwatched": sum(r["unwatched"] for r in rows), "cases": len(rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20, help="graphene frames per case (default 20)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per pixel size and dose (default 1)")
    ap.add_argument("--size", type=int, default=512, help="frame side in px (default 512)")
    a = ap.parse_args(argv)
    res = run(a.frames, a.seeds, a.size)
    print("| A/px | e/A^2 | seed | first frame | spot contrast | guard fired on graphene frames | other materials missed |\n"
          "|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        if r["unwatched"]:
            print(f"| {r['pixel_size_A']} | {r['dose']:.0e} | {r['seed']} | {r['verdict']} | too faint | no guard: "
                  "every frame checked in full | - |")
            continue
        print(f"| {r['pixel_size_A']} | {r['dose']:.0e} | {r['seed']} | {r['verdict']} | {r['contrast']:.0f} | "
              f"{len(r['fired'])} of {r['graphene_frames']} {r['fired'] or ''} | {', '.join(r['missed']) or '-'} |")
    print(f"guard fired on {res['graphene_fired']} of {res['graphene_frames']} graphene frames; missed "
          f"{res['others_missed']} of {res['others']} first frames of another material; {res['unwatched']} of "
          f"{res['cases']} series without a guard (every frame checked in full)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
