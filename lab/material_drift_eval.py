"""Does a carried graphene mask follow the drift? (engine.health.material_cadence, issue 21 criterion 5)

Laboratory code (not imported by the runtime). Simulated drifting movies of graphene beside a MoS2 flake
(``engine.sim.materials.MaterialMovie(spec, "graphene_patch", other="MoS2")``, 512^2) are judged frame by
frame two ways, on the same frames:

* **old**: the full check (:func:`engine.pipeline.frame_material`) on every frame (what a masked series
  got before the mask was carried);
* **new**: :class:`~engine.health.material_cadence.MaterialCadence` (full checks every N frames, the mask
  moved with the measured drift in between);
* with ``--against REV``, **REV**: ``engine/health/material_cadence.py`` as it was at git revision REV (before
  the mask was carried: a full check on every frame while a mask was in use, the guard otherwise).

Per movie: full checks of the new way; on every frame where the new way carried a mask and the full check
of that frame gives one too, the IoU of the two masks; and, against the simulator's truth, the share of
the flake's atoms (species OTHER) and of the lattice atoms inside the region each way analyses (a frame
not called graphene analyses nothing; a graphene frame without a mask the whole field).

    python -m lab.material_drift_eval [--seeds 11 12] [--pixel-sizes 0.07 0.1 0.15 0.2 0.3] [--frames 40]
                                      [--imaging random] [--every-n 20] [--against REV] [--fraction 0.5]
                                      [--drift 0.45 0.25] [--dose 1e5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def movie(seed: int, px: float, n: int, imaging=None, dose=1e5, drift=(0.45, 0.25), size=512, fraction=None,
          other: str = "MoS2"):
    """(frames, truths) of a drifting movie of graphene beside ``other`` (MoS2, amorphous or vacuum;
    ``fraction``: of the simulated sample, which reaches beyond the field by the drift's span, covered by
    it; default U(0.15, 0.4))."""
    from engine.sim.materials import MaterialMovie
    from engine.sim.movie import MovieSpec

    spec = MovieSpec(n_frames=n, shape_px=(size, size), pixel_size_A=px, dose_e_per_A2=dose, imaging=imaging,
                     drift_A_per_frame=drift, seed=seed)
    out = list(MaterialMovie(spec, "graphene_patch", other=other, fraction=fraction).frames())
    return [img for img, _ in out], [t for _, t in out]


def iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def analysed_split(v, truth) -> tuple[float, float]:
    """(share of the flake's atoms, share of the lattice atoms) inside the region analysed under ``v``."""
    from engine.types import OTHER

    xy = truth.xy_px
    H, W = (v.mask.shape if v.mask is not None else (None, None))
    if H is None:
        H = W = int(np.ceil(xy.max())) + 1 if len(xy) else 1
    ins = (xy[:, 0] >= 0) & (xy[:, 0] <= W - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= H - 1)
    ix, iy = np.rint(xy[ins]).astype(int).T
    if not v.is_graphene:
        kept = np.zeros(len(ix), bool)
    elif v.mask is not None and v.graphene_fraction < 1.0:
        kept = v.mask[iy, ix]
    else:
        kept = np.ones(len(ix), bool)
    from engine.sim.structures import LABEL

    # the other material's atoms: MoS2's (species OTHER) or amorphous carbon's (labelled contamination; the
    # graphene of a patch sample has no contamination of its own)
    flake = (truth.species[ins] == OTHER) | (truth.label[ins] == LABEL["contamination"])
    return (float(kept[flake].mean()) if flake.any() else float("nan"),
            float(kept[~flake].mean()) if (~flake).any() else float("nan"))


def evaluate_movie(frames, truths, px: float, every_n: int = 20, ref_module=None) -> dict:
    from engine.health.material_cadence import MaterialCadence
    from engine.health.monitor import FrameHealth
    from engine.pipeline import frame_material
    from streamer.frame import Frame

    cad = MaterialCadence(every_n)
    ref = ref_module.MaterialCadence(every_n) if ref_module is not None else None
    from engine.health.material_cadence import shift_mask

    rows, checked = [], {}
    for i, (img, truth) in enumerate(zip(frames, truths)):
        f = Frame(data=img, series="drift", seq=i, t_acquired=float(i), pixel_size_A=px)
        fresh = checked[i] = frame_material(f)
        new = cad.verdict(f, FrameHealth(), lambda _f: fresh)
        row = {"frame": i, "old": fresh.verdict, "new": new.verdict, "carried": new.carried_over,
               "check": new.check, "old_fraction": fresh.graphene_fraction, "new_fraction": new.graphene_fraction}
        if new.carried_over and new.mask is not None and new.graphene_fraction < 1 and fresh.mask is not None:
            row["iou"] = iou(new.mask, fresh.mask)
            # the same reference mask moved by the true drift (the simulator's field origins): what the full
            # checks' own scatter leaves, whatever the drift measured
            k = new.carried_from_frame
            dx, dy = -(truth.origin_A - truths[k].origin_A) / px
            row["iou_true_drift"] = iou(shift_mask(checked[k].mask, dy, dx), fresh.mask)
            mdx, mdy = _measured(new.check)
            row["drift_error_px"] = float(np.hypot(mdx - dx, mdy - dy))
        row["old_flake_in"], row["old_lattice_in"] = analysed_split(fresh, truth)
        row["new_flake_in"], row["new_lattice_in"] = analysed_split(new, truth)
        if ref is not None:
            rv = ref.verdict(f, FrameHealth(), lambda _f: fresh)
            row["ref"], row["ref_fraction"] = rv.verdict, rv.graphene_fraction
            row["ref_flake_in"], row["ref_lattice_in"] = analysed_split(rv, truth)
        rows.append(row)
    s = cad.s
    out = {"frames": len(frames), "full_checks": s.full_checks, "guard_fired": s.guard_fired,
           "drift_lost": s.drift_lost, "rows": rows}
    if ref is not None:
        out["ref_full_checks"] = ref.s.full_checks
    return out


def _measured(check: str) -> tuple[float, float]:
    """(dx, dy) from a carried verdict's check ("..., drift (+1.0, -2.0) px (peak ...)")."""
    import re

    m = re.search(r"drift \(([-+0-9.]+), ([-+0-9.]+)\) px", check)
    return (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))


def _peak(check: str) -> float:
    """The phase-correlation peak from a carried verdict's check ("... (peak 12.3)")."""
    import re

    return float(re.search(r"\(peak ([0-9.]+)\)", check).group(1))


def summary(res: dict) -> dict:
    rows = res["rows"]
    ious = [r["iou"] for r in rows if "iou" in r]
    masked = [r for r in rows if r["old_fraction"] < 1 and r["old"] == "graphene"]
    out = {"frames": res["frames"], "full_checks": res["full_checks"], "guard_fired": res["guard_fired"],
           "drift_lost": res["drift_lost"], "masked_old": len(masked),
           "carried_masks": sum(1 for r in rows if r["carried"] and r["new_fraction"] < 1 and r["new"] == "graphene"),
           "iou_n": len(ious), "iou_min": min(ious) if ious else None,
           "iou_median": float(np.median(ious)) if ious else None,
           "iou_true_drift_median": float(np.median([r["iou_true_drift"] for r in rows if "iou" in r])) if ious else None,
           "drift_error_px_max": max(r["drift_error_px"] for r in rows if "iou" in r) if ious else None,
           "drift_peak_min": min((_peak(r["check"]) for r in rows if r["carried"] and "drift (" in r["check"]),
                                 default=None),
           "ref_full_checks": res.get("ref_full_checks")}
    # the share of the flake's atoms analysed, over the frames each way analyses (called graphene); the share of
    # the lattice atoms analysed over all frames (a frame not called graphene keeps none)
    for arm in ("old", "new", "ref"):
        v = [r[f"{arm}_flake_in"] for r in rows if r.get(arm) == "graphene" and np.isfinite(r[f"{arm}_flake_in"])]
        out[f"{arm}_flake_in"] = float(np.mean(v)) if v else None
        v = [r[f"{arm}_lattice_in"] for r in rows if arm in r and np.isfinite(r[f"{arm}_lattice_in"])]
        out[f"{arm}_lattice_in"] = float(np.mean(v)) if v else None
        out[f"graphene_{arm}"] = sum(r.get(arm) == "graphene" for r in rows)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    ap.add_argument("--pixel-sizes", type=float, nargs="+", default=[0.07, 0.1, 0.15, 0.2, 0.3])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--every-n", type=int, default=20)
    ap.add_argument("--imaging", choices=("default", "random"), default="default")
    ap.add_argument("--dose", type=float, default=1e5)
    ap.add_argument("--drift", type=float, nargs=2, default=(0.45, 0.25), metavar=("DX", "DY"), help="A per frame")
    ap.add_argument("--other", choices=("MoS2", "amorphous", "vacuum"), default="MoS2",
                    help="what lies beside the graphene (default MoS2; the 'flake' columns then count its atoms)")
    ap.add_argument("--fraction", type=float, default=None,
                    help="share of the simulated sample covered by the flake (default U(0.15, 0.4); 0.5: the edge "
                         "crosses the field's centre at the start)")
    ap.add_argument("--against", default=None, metavar="REV",
                    help="also run engine/health/material_cadence.py of this git revision on the same frames")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    imaging = "random" if a.imaging == "random" else None
    from lab.material_bench import load_cadence

    ref_module = load_cadence(a.against) if a.against else None
    arms = "every frame / " + (f"{a.against} / " if a.against else "") + "new"
    print(f"| seed | A/px | frames masked (every frame) | full checks ({'REV / ' if a.against else ''}new) | guard / drift "
          f"fired (new) | carried masks | IoU carried vs fresh: min / median (n); moved by the true drift: median | "
          f"drift error max (px); lowest peak | graphene frames ({arms}) | flake atoms analysed in them ({arms}) | lattice atoms "
          f"analysed ({arms}) |\n|---|---|---|---|---|---|---|---|---|---|---|")
    allres = []
    for seed in a.seeds:
        for px in a.pixel_sizes:
            frames, truths = movie(seed, px, a.frames, imaging, a.dose, tuple(a.drift), fraction=a.fraction,
                                   other=a.other)
            sm = summary(evaluate_movie(frames, truths, px, a.every_n, ref_module))
            sm.update(seed=seed, pixel_size_A=px)
            allres.append(sm)

            def f(x):
                return "-" if x is None else f"{x:.3f}"

            def arms_of(k):
                return " / ".join(f(sm[f"{p}_{k}"]) for p in (("old", "ref", "new") if a.against else ("old", "new")))

            fc = (f"{sm['ref_full_checks']} / " if a.against else "") + str(sm["full_checks"])
            print(f"| {seed} | {px} | {sm['masked_old']} | {fc} | {sm['guard_fired']} / {sm['drift_lost']} | "
                  f"{sm['carried_masks']} | {f(sm['iou_min'])} / {f(sm['iou_median'])} ({sm['iou_n']}); "
                  f"{f(sm['iou_true_drift_median'])} | {f(sm['drift_error_px_max'])}; {f(sm['drift_peak_min'])} | "
                  f"{' / '.join(str(sm['graphene_' + p]) for p in (('old', 'ref', 'new') if a.against else ('old', 'new')))} | "
                  f"{arms_of('flake_in')} | {arms_of('lattice_in')} |",
                  flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(allres, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
