"""What the unsure-region mask (engine/health/material_atoms.py) leaves out, on simulated 512^2 frames.

Laboratory code (not imported by the runtime). Frames over the simulator's imaging ranges (pixel size
log-uniform in 0.03-0.3 A/px, doses cycling 1e4, 1e5, 1e6, 3e3 e/A^2): partly graphene fields
(``graphene_patch`` with amorphous carbon or vacuum beyond a straight edge) and whole graphene fields of
the five kinds of lab/material_mask_eval.py. Each frame goes through :class:`engine.pipeline.Pipeline`
twice, with the unsure-region mask and without it, and is scored against the simulator's atoms:

* graphene kept: analyzer atoms within 0.5 A of a lattice atom, with the mask / without it (pooled, and
  the whole graphene frames that lost any);
* the other part: analyzer atoms more than 3 A from any lattice atom, and the Si among them, without the
  mask -> with it.

Frames whose verdict is not graphene or whose C-atom SNR is below 2 are counted apart (the mask does not
run there).

    python -m lab.material_unsure_eval [--frames 64] [--seed 6101]
"""

from __future__ import annotations

import argparse
import sys
from unittest import mock

import numpy as np

KINDS = ("amorphous", "vacuum", "graphene", "graphene_hole", "graphene_contamination", "graphene_grains",
         "graphene_dopants", "amorphous")
DOSES = (1e4, 1e5, 1e6, 3e3)


def frames(seed: int, n: int, size: int = 512):
    """``n`` simulated frames (TrainingExample, kind), kinds and doses in turn (module docstring)."""
    from engine.sim.materials import material_example
    from lab.material_eval import draw

    rng = np.random.default_rng(seed)
    for t in range(n):
        kind, dose = KINDS[t % len(KINDS)], DOSES[(t // len(KINDS)) % len(DOSES)]
        px = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))))
        if kind in ("amorphous", "vacuum"):
            ex = material_example(rng, "graphene_patch", (size, size), px, dose_range=(dose, dose), other=kind)
        else:
            ex = draw(kind, rng, size, (dose, dose))
        yield ex, kind


def score(result, ex) -> dict | None:
    """Lattice atoms found, atoms of the other part and the Si among them, of one frame's result."""
    from scipy.spatial import cKDTree

    ch = result.chemistry
    if ch is None or not len(ch.atoms):
        return None
    xy = np.asarray(ch.atoms.xy_px, float)
    lat = ex.xy_px[ex.lattice]
    d = cKDTree(lat).query(xy)[0] * ex.pixel_size_A if len(lat) else np.full(len(xy), np.inf)
    far = d > 3.0
    return {"lattice": int((d < 0.5).sum()), "other": int(far.sum()),
            "other_si": int((far & (np.asarray(ch.atoms.species) != 0)).sum())}


def evaluate(seed: int = 6101, n: int = 64, progress: bool = True) -> dict:
    import engine.pipeline as pipeline_module
    from engine.pipeline import Pipeline
    from stemwatch.config import Config
    from streamer.frame import Frame

    pipe = Pipeline(Config().replace(inference={"backend": "onnx"}))
    rows, skipped = [], 0
    for t, (ex, kind) in enumerate(frames(seed, n)):
        out = {}
        for mode in ("without", "with"):
            pipe.reset()
            f = Frame(data=ex.image, series=f"{seed}-{t}-{mode}", seq=0, t_acquired=0.0, pixel_size_A=ex.pixel_size_A)
            if mode == "without":
                with mock.patch.object(pipeline_module, "unsure_region", lambda atoms, shape: None):
                    r = pipe.process(f)
            else:
                r = pipe.process(f)
            out[mode] = (r, score(r, ex))
        r = out["with"][0]
        if r.material is None or not r.material.is_graphene or not (r.health is not None and r.health.snr >= 2) \
                or out["without"][1] is None:
            skipped += 1
            continue
        a, b = out["without"][1], out["with"][1] or {"lattice": 0, "other": 0, "other_si": 0}
        rows.append({"kind": kind, "px": ex.pixel_size_A, "lattice_without": a["lattice"], "lattice_with": b["lattice"],
                     "other_without": a["other"], "other_with": b["other"], "si_without": a["other_si"],
                     "si_with": b["other_si"], "left_out": 1.0 - float(r.material.graphene_fraction)})
        if progress:
            print(f"  {t} {kind} {ex.pixel_size_A:.3f} A/px: {rows[-1]}", file=sys.stderr, flush=True)
    pipe.close()
    return {"seed": seed, "frames": n, "rows": rows, "skipped": skipped}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=64, help="frames (default 64)")
    ap.add_argument("--seed", type=int, default=6101, help="random seed (tuned on 61 and 62)")
    a = ap.parse_args(argv)
    res = evaluate(a.seed, a.frames)
    rows = res["rows"]
    print("| frames | n | lattice atoms found: without -> with the mask | frames that lost any | "
          "other-part atoms without -> with | Si there without -> with |")
    print("|---|---|---|---|---|---|")
    for name, sel in (("whole graphene", lambda r: r["kind"] not in ("amorphous", "vacuum")),
                      ("graphene + amorphous carbon", lambda r: r["kind"] == "amorphous"),
                      ("graphene + vacuum", lambda r: r["kind"] == "vacuum")):
        rr = [r for r in rows if sel(r)]
        if not rr:
            continue
        s = {k: sum(r[k] for r in rr) for k in rr[0] if k not in ("kind", "px", "left_out")}
        lost = sum(r["lattice_with"] < r["lattice_without"] for r in rr)
        print(f"| {name} | {len(rr)} | {s['lattice_without']} -> {s['lattice_with']} "
              f"({100 * s['lattice_with'] / max(s['lattice_without'], 1):.2f} %) | {lost} | "
              f"{s['other_without']} -> {s['other_with']} | {s['si_without']} -> {s['si_with']} |")
    print(f"\nframes not scored (not graphene, or C-atom SNR < 2): {res['skipped']} of {res['frames']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
