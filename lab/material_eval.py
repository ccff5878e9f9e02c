"""Held-out accuracy of the material verdict (engine.health.material) on simulated frames.

Laboratory code (not imported by the runtime). For each kind of sample it draws frames over the
simulator's full imaging ranges (engine.sim.materials.material_example: random probe, tail,
backgrounds, noise, scan distortions), pixel sizes log-uniform in 0.03-0.3 A/px, dose log-uniform in
``dose_range`` (default 1e4-1e6 e/A^2: frames that can be resolved at all), and classifies each
frame with the pixel size declared correctly, x0.5, x2 and not at all.

Truth: MoS2, WS2, hBN, amorphous carbon and vacuum must never be called ``graphene``. A graphene
frame must stay ``graphene`` when graphene covers at least half of its field (``graphene_cover``:
the fraction of 3 A cells holding lattice atoms and no more contamination than a graphene layer);
frames that are mostly covered (a contamination patch or a hole larger than the field, which
happens at fine sampling: a 512 px frame at 0.03 A/px is 15 A wide) are reported apart.

    python -m lab.material_eval [--per-kind 40] [--seed 2026] [--size 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict

import numpy as np

GRAPHENE_KINDS = ("graphene", "graphene_hole", "graphene_contamination", "graphene_grains", "graphene_dopants",
                  "graphene_patch")
OTHER_KINDS = ("MoS2", "WS2", "hBN", "amorphous", "vacuum")
#: graphene kinds run only when named in ``--kinds`` (the default draws, and so every seed's figures, are unchanged):
#: graphene_beside_MoS2 is graphene_patch with a MoS2 flake over 15-40 % of the field (issue 21 criterion 2)
EXTRA_GRAPHENE_KINDS = ("graphene_beside_MoS2",)
DECLARED = (("true", 1.0), ("x0.5", 0.5), ("x2", 2.0), ("none", None))


def graphene_cover(ex, cell_A: float = 3.0) -> float:
    """Fraction of the field (cells of ``cell_A``) with lattice atoms and at most graphene-like
    contamination (< 0.38 atoms/A^2 of non-lattice light atoms)."""
    h, w = ex.image.shape
    ps = ex.pixel_size_A
    ny, nx = max(1, int(h * ps / cell_A)), max(1, int(w * ps / cell_A))
    xy = ex.xy_px
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] < w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] < h - 0.5)
    cx = np.clip(((xy[:, 0] + 0.5) / w * nx).astype(int), 0, nx - 1)
    cy = np.clip(((xy[:, 1] + 0.5) / h * ny).astype(int), 0, ny - 1)
    cell = cy * nx + cx
    lat = np.bincount(cell[inside & ex.lattice], minlength=nx * ny)
    cont = np.bincount(cell[inside & ~ex.lattice & (ex.z <= 8)], minlength=nx * ny)
    area = (w * ps / nx) * (h * ps / ny)
    ok = (lat > 0) & (cont / area < 0.38)
    return float(ok.mean())


def draw(kind: str, rng: np.random.Generator, size: int, dose_range, px_range=(0.03, 0.3)):
    """One simulated frame of ``kind`` (a TrainingExample), pixel size log-uniform in ``px_range``."""
    from engine.sim.materials import material_example

    px = float(np.exp(rng.uniform(np.log(px_range[0]), np.log(px_range[1]))))
    kw = {}
    material = kind
    if kind == "graphene_contamination":
        material, kw = "graphene", {"contamination": True}
    elif kind == "graphene_dopants":
        material, kw = "graphene", {"si_per_nm2": float(rng.uniform(1.0, 4.0))}
    elif kind == "graphene_patch":
        kw = {"other": str(rng.choice(["amorphous", "vacuum"]))}
    elif kind == "graphene_beside_MoS2":
        material, kw = "graphene_patch", {"other": "MoS2"}
    return material_example(rng, material, shape_px=(size, size), pixel_size_A=px, dose_range=dose_range, **kw)


def _mask_split(ex, v) -> dict:
    """Of a graphene verdict on a partly-other frame: the fraction of the other material's atoms (species
    OTHER) and of the lattice atoms inside the frame that lie inside the analysed region (the mask; the
    whole field without one)."""
    from engine.types import OTHER

    if not v.is_graphene:
        return {}
    h, w = ex.image.shape
    xy = ex.xy_px
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)
    ix, iy = np.rint(xy[inside]).astype(int).T
    kept = v.mask[iy, ix] if v.mask is not None else np.ones(len(ix), bool)
    other = ex.species[inside] == OTHER
    lat = ex.lattice[inside]
    return {"other_in_mask": float(kept[other].mean()) if other.any() else None,
            "lattice_in_mask": float(kept[lat].mean()) if lat.any() else None}


def evaluate(per_kind: int = 40, seed: int = 2026, size: int = 512, dose_range=(1e4, 1e6), kinds=None,
             progress: bool = False, px_range=(0.03, 0.3)) -> dict:
    """Classify ``per_kind`` frames of every kind under every declaration; return counts and costs."""
    from engine.health.material import classify_material
    from engine.sim.imaging import ImagingParams

    rng = np.random.default_rng(seed)
    kinds = kinds or GRAPHENE_KINDS + OTHER_KINDS
    counts: dict = defaultdict(Counter)        # (kind, declared) -> Counter(verdict)
    covered = Counter()                        # graphene frames mostly covered (excluded)
    rows = []
    for kind in kinds:
        for i in range(per_kind):
            ex = draw(kind, rng, size, dose_range, px_range)
            is_g = kind in GRAPHENE_KINDS + EXTRA_GRAPHENE_KINDS
            cover = graphene_cover(ex) if is_g else 0.0
            snr = ImagingParams.from_dict(ex.params["imaging"]).atom_snr(ex.pixel_size_A)
            if is_g and cover < 0.5:
                covered[kind] += 1
            for name, f in DECLARED:
                px = ex.pixel_size_A * f if f is not None else None
                v = classify_material(ex.image, px)
                key = kind if (not is_g or cover >= 0.5) else kind + " (mostly covered)"
                counts[(key, name)][v.verdict] += 1
                rows.append({"kind": kind, "declared": name, "pixel_size_A": ex.pixel_size_A, "cover": cover,
                             "dose": ex.params["imaging"]["dose_e_per_A2"], "atom_snr": snr, "index": i,
                             **v.to_dict(), **(_mask_split(ex, v) if kind in EXTRA_GRAPHENE_KINDS else {})})
            if progress:
                print(f"\r{kind} {i + 1}/{per_kind}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    g_ok = g_n = o_ok = o_n = 0
    for (key, _), c in counts.items():
        n = sum(c.values())
        kind = key.split(" ")[0]
        if "covered" in key:
            continue
        if kind in GRAPHENE_KINDS + EXTRA_GRAPHENE_KINDS:
            g_n += n
            g_ok += c["graphene"]
        else:
            o_n += n
            o_ok += n - c["graphene"]
    return {"counts": {f"{k}|{d}": dict(c) for (k, d), c in counts.items()}, "rows": rows,
            "graphene_kept": g_ok / max(g_n, 1), "graphene_frames": g_n,
            "non_graphene_rejected": o_ok / max(o_n, 1), "non_graphene_frames": o_n,
            "mostly_covered": dict(covered), "seed": seed, "per_kind": per_kind, "size": size,
            "dose_range": list(dose_range), "px_range": list(px_range)}


def table(res: dict) -> str:
    """Markdown table: per kind and declaration, the fraction called graphene and the verdicts."""
    lines = ["| sample | declared | frames | called graphene | verdicts |", "|---|---|---|---|---|"]
    for key in sorted(res["counts"], key=lambda k: (k.split("|")[0] not in GRAPHENE_KINDS + EXTRA_GRAPHENE_KINDS, k)):
        kind, dec = key.split("|")
        c = res["counts"][key]
        n = sum(c.values())
        verdicts = ", ".join(f"{v} {c[v]}" for v in sorted(c))
        lines.append(f"| {kind} | {dec} | {n} | {100 * c.get('graphene', 0) / n:.1f} % | {verdicts} |")
    lines.append("")
    lines.append(f"graphene frames kept as graphene: {100 * res['graphene_kept']:.2f} % of {res['graphene_frames']}; "
                 f"non-graphene frames not called graphene: {100 * res['non_graphene_rejected']:.2f} % of "
                 f"{res['non_graphene_frames']} (frame x declaration); mostly covered graphene frames left out: "
                 f"{res['mostly_covered']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-kind", type=int, default=40, help="frames per kind of sample (default 40)")
    ap.add_argument("--seed", type=int, default=2026, help="random seed (held out: the thresholds were set on seeds < 100)")
    ap.add_argument("--size", type=int, default=512, help="frame side in px (default 512)")
    ap.add_argument("--dose", type=float, nargs=2, default=(1e4, 1e6), metavar=("MIN", "MAX"),
                    help="dose range e/A^2 (log-uniform; default 1e4 1e6)")
    ap.add_argument("--kinds", nargs="*", default=None, help="subset of kinds")
    ap.add_argument("--pixel-size", type=float, nargs=2, default=(0.03, 0.3), metavar=("MIN", "MAX"),
                    help="pixel size range A/px (log-uniform; default 0.03 0.3)")
    ap.add_argument("--json", default=None, help="write the full result (every frame) here")
    a = ap.parse_args(argv)
    t0 = time.time()
    res = evaluate(a.per_kind, a.seed, a.size, tuple(a.dose), a.kinds, progress=True, px_range=tuple(a.pixel_size))
    print(table(res))
    print(f"({time.time() - t0:.0f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
