"""Image statistics that compare simulated frames with real ones (gain- and offset-free).

:func:`frame_statistics` measures, on any HAADF frame of graphene:

* ``cnr``: lattice contrast-to-noise per pixel, (p90 - p5) of the frame smoothed over 0.25 A
  divided by the per-pixel noise std (from the residual against the 4-neighbour mean);
* ``hollow_to_peak``: p5 / p90 of the smoothed frame after subtracting ``offset`` (how much diffuse
  signal fills the hexagon centres; needs the detector offset);
* ``heavy_contrast``: (max - p5) / (p90 - p5) of the smoothed frame (a Si or heavier atom above the
  lattice modulation; about 1-2 without one);
* ``lag_x`` / ``lag_y``: lag-1 correlation of the noise along the fast (x) and slow (y) scan axes
  (detector lag, row noise);
* ``row_excess``: std of the row means over the value expected from pixel noise (line noise).

``python -m lab.sim.realism [REALDATA_DIR]`` prints these for the real frames in
``/work/shared/realdata`` (evaluation only: nothing derived from them is written) next to the
range the simulator draws at the same pixel size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lab.realdata import REALDATA
from lab.realdata import real_frames as load_real_frames

KEYS = ("cnr", "hollow_to_peak", "heavy_contrast", "lag_x", "lag_y", "row_excess")


def frame_statistics(image: np.ndarray, pixel_size_A: float, offset: float = 0.0) -> dict:
    """Statistics of one frame (see the module docstring); ``offset`` in the frame's units."""
    a = np.asarray(image, np.float64) - offset
    m4 = (np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1)) / 4
    noise = np.sqrt(((a - m4)[2:-2, 2:-2]).var() / 1.25)
    sm = ndi.gaussian_filter(a, 0.25 / pixel_size_A)
    p5, p90 = np.percentile(sm[4:-4, 4:-4], [5, 90])
    mx = sm[4:-4, 4:-4].max()
    r = (a - ndi.gaussian_filter(a, 0.3 / pixel_size_A))[5:-5, 5:-5]
    v = r.var()
    rows = a.mean(1)
    rows_dev = (rows - ndi.uniform_filter1d(rows, 15))[10:-10]
    return {"cnr": float((p90 - p5) / max(noise, 1e-12)),
            "hollow_to_peak": float(p5 / p90) if p90 > 0 else float("nan"),
            "heavy_contrast": float((mx - p5) / max(p90 - p5, 1e-12)),
            "lag_x": float((r[:, :-1] * r[:, 1:]).mean() / v),
            "lag_y": float((r[:-1] * r[1:]).mean() / v),
            "row_excess": float(rows_dev.std() / max(np.sqrt(v / a.shape[1]), 1e-12))}


#: statistics are taken on a clean part of some frames: the grain boundary 6 nm frame's upper-left
#: 256 x 256 px (a contamination blob fills the lower right)
CROPS = {"G_GB_6nm": (slice(0, 256), slice(0, 256))}


def real_frames(root: str | Path = REALDATA) -> list[dict]:
    """The real frames of ``root`` (:func:`lab.realdata.real_frames`, the one loader and pixel-size
    table) as dicts: name, image (cropped by :data:`CROPS`), pixel_size_A, offset."""
    out = []
    for it in load_real_frames(root):
        crop = CROPS.get(it["name"])
        out.append({"name": it["name"], "image": it["image"][crop] if crop else it["image"],
                    "pixel_size_A": it["pixel_size_A"], "offset": it["offset"]})
    return out


def simulated_statistics(pixel_size_A: float, n: int = 40, seed: int = 0, shape_px=(256, 256), **overrides) -> dict:
    """Statistics of ``n`` random training frames at ``pixel_size_A``: {key: (n,) array}."""
    from engine.sim import make_training_example

    rng = np.random.default_rng(seed)
    kw = {"si_per_nm2": 1.0, "contamination": False, "adatoms": False, **overrides}
    rows = []
    for _ in range(n):
        ex = make_training_example(rng, shape_px, pixel_size_A, **kw)
        rows.append(frame_statistics(ex.image, pixel_size_A, ex.params["imaging"]["offset_counts"]))
    return {k: np.array([r[k] for r in rows]) for k in KEYS}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    frames = real_frames(argv[0] if argv else REALDATA)
    if not frames:
        print("no real frames found", file=sys.stderr)
        return 1
    for fr in frames:
        st = frame_statistics(fr["image"], fr["pixel_size_A"], fr["offset"])
        sim = simulated_statistics(fr["pixel_size_A"], n=60, seed=1)
        print(f"{fr['name']} ({fr['pixel_size_A']} A/px)")
        for k in KEYS:
            lo, med, hi = np.percentile(sim[k], [2, 50, 98])
            flag = "" if lo <= st[k] <= hi else "   <-- outside the simulated 2-98 %"
            print(f"  {k:15s} real {st[k]:8.3f}   sim 2/50/98 % {lo:8.3f} {med:8.3f} {hi:8.3f}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
