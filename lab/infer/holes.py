"""Atom precision inside simulated holes (issue 13, criterion 3: "the network puts no lattice into holes").

The simulator (:func:`engine.sim.structures.add_hole`) removes the lattice inside an irregular disc and
returns no outline, so the hole is found from the truth atoms of each frame:

* **core**: the points of the frame farther than :data:`HOLE_CORE_A` (2.0 A) from every true atom
  (the truth holds atoms up to 3 A outside the field, so the frame edge makes no core). In a lattice
  without a hole no point is farther than 1.67 A from an atom (hexagon centres 1.42 A, the octagon of a
  5-8-5 divacancy ~1.6 A, measured on simulated frames with every point defect, strain and jitter),
  so the core is the hole and nothing else.
* **zone**: the core grown by :data:`HOLE_ZONE_A` = 2.0 + 0.5 A: the whole hole, the band 1-2 A inside
  its rim where a continued lattice would sit, and the rim atoms themselves (2.0 A from the core, plus
  the match radius), so the true edge atoms count and an atom moved off the rim counts against.

Per frame with a core: the predicted atoms inside the zone, and how many of them are matched one-to-one
(mutual nearest neighbours within 0.5 A, :data:`lab.radii.ATOM_MATCH_RADIUS_A`, the same matching as the
detection scores) to a true atom: ``precision = matched / in zone``. Frames without a hole are skipped.
``core_false`` counts the unmatched atoms inside the core itself (deep in the hole).

Two sets of atoms are scored on every frame (whatever its SNR or verdict):

* ``raw``: the network's own maps, read by the simple peak finder (:func:`lab.infer.evaluate.find_atoms_simple`);
* ``reported``: what the analyzer reports to the operator: :func:`engine.pipeline.analyze_frame` at the
  declared (true) pixel size (material mask, :func:`engine.chem.atoms.find_atoms` with its raw-frame
  checks, atoms outside the frame dropped).

``python -m lab.infer.holes [--frames N] [--pixel-sizes ...] [--seed S] [--fit-sigma X]`` prints the table of
docs/model.md (``--seed``: the same cells from another seed; ``--fit-sigma 0``: the vacuum check's joint fit off); ``--atoms`` what
the vacuum check measures at the false atoms left in the zones and at the lattice atoms near vacuum
(:func:`atom_rows`; docs/model.md, "What is left at 1e4 and 1e3"); ``--lattice`` the check's cost on plain frames;
``--by-snr [SEED ...]`` the reported precision per dose and band of estimated SNR, pooled over seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from lab.match import match_mutual
from lab.radii import ATOM_MATCH_RADIUS_A

#: a point farther than this from every true atom lies in a hole (no lattice void reaches 1.7 A)
HOLE_CORE_A = 2.0
#: predicted atoms within this of the core are scored: the hole, its rim atoms and the match radius
HOLE_ZONE_A = HOLE_CORE_A + ATOM_MATCH_RADIUS_A
#: a false atom in a zone farther than this from every true atom is lattice put into the hole, not a true
#: atom read off its place (half the C-C bond is 0.71 A)
FAR_A = 1.0
#: cores smaller than this (A^2) are ignored (a few pixels where a large vacancy complex grazes 2 A)
MIN_CORE_A2 = 0.5
DOSES = (1e3, 1e4, 1e5, 1e6)
PIXEL_SIZES_A = (0.05, 0.076, 0.1, 0.2)
#: the held-out variant in which every frame has a hole (lab.infer.heldout.sim_overrides)
VARIANT = "holes"


def hole_core(true_xy_px: np.ndarray, frame_shape, pixel_size_A: float) -> np.ndarray:
    """(H, W) bool: frame pixels farther than :data:`HOLE_CORE_A` from every true atom (small specks
    below :data:`MIN_CORE_A2` removed)."""
    H, W = frame_shape
    xy = np.asarray(true_xy_px, np.float64).reshape(-1, 2)
    if not len(xy):
        return np.ones((H, W), bool)
    yy, xx = np.mgrid[0:H, 0:W]
    d, _ = cKDTree(xy * pixel_size_A).query(np.c_[xx.ravel(), yy.ravel()] * pixel_size_A,
                                            distance_upper_bound=HOLE_CORE_A)
    core = ~np.isfinite(d).reshape(H, W)
    if core.any():
        lab, n = ndimage.label(core)
        area = ndimage.sum_labels(core, lab, np.arange(1, n + 1)) * pixel_size_A ** 2
        core = np.isin(lab, 1 + np.flatnonzero(area >= MIN_CORE_A2))
    return core


def in_zone(xy_px: np.ndarray, core: np.ndarray, pixel_size_A: float, radius_A: float = HOLE_ZONE_A) -> np.ndarray:
    """(N,) bool: positions within ``radius_A`` of a core pixel."""
    xy = np.asarray(xy_px, np.float64).reshape(-1, 2)
    rc = np.argwhere(core)
    if not len(rc) or not len(xy):
        return np.zeros(len(xy), bool)
    d, _ = cKDTree(rc[:, ::-1] * pixel_size_A).query(xy * pixel_size_A, distance_upper_bound=radius_A)
    return np.isfinite(d)


def hole_score(pred_xy_px: np.ndarray, true_xy_px: np.ndarray, core: np.ndarray, pixel_size_A: float) -> dict:
    """``{"n", "false", "core_false", "far_false", "precision"}`` of the predicted atoms in the zone around
    ``core`` (precision nan when none is there). ``far_false``: the false ones farther than
    :data:`FAR_A` from every true atom (lattice put into the hole; the others are true atoms, mostly of
    the rim, read 0.5-1 A off their place or read twice)."""
    pred = np.asarray(pred_xy_px, np.float64).reshape(-1, 2)
    true = np.asarray(true_xy_px, np.float64).reshape(-1, 2)
    zone = in_zone(pred, core, pixel_size_A)
    matched = np.zeros(len(pred), bool)
    ip, _ = match_mutual(pred * pixel_size_A, true * pixel_size_A, ATOM_MATCH_RADIUS_A)
    matched[ip] = True
    deep = in_zone(pred, core, pixel_size_A, pixel_size_A)              # within a pixel of the core
    n = int(zone.sum())
    false = int((zone & ~matched).sum())
    far = np.zeros(len(pred), bool)
    if len(true) and len(pred):
        far = cKDTree(true * pixel_size_A).query(pred * pixel_size_A)[0] > FAR_A
    elif len(pred):
        far[:] = True
    return {"n": n, "false": false, "core_false": int((deep & ~matched).sum()),
            "far_false": int((zone & ~matched & far).sum()), "precision": (n - false) / n if n else float("nan")}


class _Capture:
    """The inferencer, keeping the network's maps of the last frame (before the analyzer's material
    mask), so the raw maps and the reported atoms come from one inference."""

    def __init__(self, inferencer):
        self.inferencer = inferencer
        self.probs = None

    def predict(self, *args, **kw):
        self.probs = self.inferencer.predict(*args, **kw)
        return self.probs


def frame_rows(inferencer, dose: float, pixel_size_A: float, frames: int, variant: str = VARIANT, cfg=None,
               reported: bool = True, seed: int | None = None) -> list[dict]:
    """Per held-out frame of one cell that has a hole core: its hole area, estimated C-atom SNR (the
    analyzer's, nan when not measurable), the true one, and :func:`hole_score` of the raw maps
    (``raw``) and of what the analyzer reports (``reported``; skipped with ``reported=False``)."""
    from engine.health.atoms import estimate_snr
    from engine.pipeline import analyze_frame
    from engine.sim.imaging import ImagingParams
    from lab.infer.evaluate import find_atoms_simple
    from lab.infer.heldout import cell_frames
    from stemwatch.config import Config
    from streamer.frame import Frame

    cfg = cfg or Config()
    rows = []
    seed_kw = {} if seed is None else {"seed": seed}
    for k, (image, xy, sp, fpx, ign, params) in enumerate(cell_frames(dose, pixel_size_A, variant, frames,
                                                                       with_params=True, **seed_kw)):
        allxy = np.concatenate([xy, ign]) if len(ign) else xy
        core = hole_core(allxy, image.shape, fpx)
        if not core.any():
            continue
        row = {"dose": dose, "pixel_size_A": pixel_size_A, "variant": variant, "frame": k,
               "hole_A2": float(core.sum() * fpx ** 2),
               "snr_true": float(ImagingParams.from_dict(params["imaging"]).atom_snr(fpx))}
        cap = _Capture(inferencer)
        if reported:
            fc = analyze_frame(Frame(image, "holes", k, 0.0, fpx), cap, cfg)
            if fc.error:
                raise RuntimeError(f"analyze_frame failed on dose {dose} px {pixel_size_A} frame {k}: {fc.error}")
            chem = fc.chemistry
            row["reported"] = hole_score(chem.atoms.xy_px if chem is not None else np.zeros((0, 2)), allxy, core, fpx)
            row["snr_est"] = float(estimate_snr(image, chem)) if chem is not None else float("nan")
            row["material"] = fc.material.verdict if fc.material is not None else ""
        probs = cap.probs if cap.probs is not None else inferencer.predict(image, fpx)
        pxy, _psp = find_atoms_simple(probs)
        row["raw"] = hole_score(pxy, allxy, core, fpx)
        rows.append(row)
    return rows


def sweep(inferencer, doses=DOSES, pixel_sizes=PIXEL_SIZES_A, frames: int = 6, variants=(VARIANT, "plain"),
          progress: bool = False, seed: int | None = None) -> list[dict]:
    """:func:`frame_rows` over every dose x pixel size x variant (frames without a hole are skipped);
    ``seed``: another set of the same cells than the held-out one (:func:`lab.infer.heldout.cell_frames`)."""
    rows = []
    for variant in variants:
        for dose in doses:
            for px in pixel_sizes:
                t0 = time.time()
                rr = frame_rows(inferencer, dose, px, frames, variant, seed=seed)
                rows += rr
                if progress:
                    print(f"{variant} {dose:.0e} {px}: {len(rr)} frames with a hole, {time.time() - t0:.1f} s",
                          file=sys.stderr, flush=True)
    return rows


def lattice_effect(inferencer, doses=DOSES, pixel_sizes=PIXEL_SIZES_A, frames: int = 6, variant: str = "plain",
                   seed: int | None = None, on=None) -> dict:
    """What the vacuum check (``ChemistryConfig.vacuum_min_dip``) costs on ordinary held-out frames:
    per dose, the detection :class:`lab.infer.evaluate.Counts` of the reported atoms
    (:func:`engine.pipeline.analyze_frame`) with the check off (``off``) and on (``on``), scored as the
    detection table (0.5 A, 1 A border left out); ``snr_ok`` the same over the frames whose estimated
    C-atom SNR is >= 2 (the frames the analyzer keeps)."""
    from engine.health.atoms import estimate_snr
    from engine.pipeline import analyze_frame
    from lab.infer.evaluate import Counts, score_frame
    from lab.infer.heldout import cell_frames
    from stemwatch.config import Config
    from streamer.frame import Frame

    on = on or Config()
    off = on.replace(chemistry={"vacuum_min_dip": 0.0})
    seed_kw = {} if seed is None else {"seed": seed}
    out = {}
    for dose in doses:
        res = {k: Counts() for k in ("off", "on", "off_snr_ok", "on_snr_ok")}
        for px in pixel_sizes:
            for k, (image, xy, sp, fpx, ign) in enumerate(cell_frames(dose, px, variant, frames, **seed_kw)):
                cap = _Capture(inferencer)
                for name, cfg in (("off", off), ("on", on)):
                    fc = analyze_frame(Frame(image, "lattice", k, 0.0, fpx), cap if name == "off" else _Fixed(cap.probs),
                                       cfg)
                    a = fc.chemistry.atoms if fc.chemistry is not None else None
                    c = score_frame(a.xy_px if a is not None else np.zeros((0, 2)),
                                    a.species if a is not None else np.zeros(0, np.int8), xy, sp, image.shape, fpx,
                                    ignore_xy_px=ign)
                    res[name].add(c)
                    if name == "off":
                        ok = fc.chemistry is not None and estimate_snr(image, fc.chemistry) >= 2.0
                    if ok:
                        res[name + "_snr_ok"].add(c)
        out[dose] = res
    return out


class _Fixed:
    """An inferencer that returns given maps (the same network output for both runs)."""

    def __init__(self, probs):
        self.probs = probs

    def predict(self, *args, **kw):
        return self.probs


def summarise(rows: list[dict], which: str) -> dict:
    """Pooled and worst-frame figures of ``which`` (``raw`` or ``reported``) over ``rows``."""
    n = sum(r[which]["n"] for r in rows)
    false = sum(r[which]["false"] for r in rows)
    per = [r[which]["precision"] for r in rows if r[which]["n"]]
    worst = min(rows, key=lambda r: r[which]["precision"] if r[which]["n"] else 2.0, default=None)
    return {"frames": len(rows), "atoms": n, "false": false, "core_false": sum(r[which]["core_false"] for r in rows),
            "far_false": sum(r[which]["far_false"] for r in rows),
            "failing_far": sum(1 for r in rows if r[which]["n"] and r[which]["far_false"] > 0.01 * r[which]["n"]),
            "pooled": (n - false) / n if n else float("nan"), "worst": min(per) if per else float("nan"),
            "worst_frame": (f"{worst['variant']} {worst['dose']:.0e} {worst['pixel_size_A']} #{worst['frame']} "
                            f"({worst[which]['false']}/{worst[which]['n']})") if worst is not None and per else "",
            "failing": sum(1 for r in rows if r[which]["n"] and r[which]["false"] > 0.01 * r[which]["n"]),
            "failing_ok": sum(1 for r in rows if r[which]["n"] and r[which]["false"] > 0.01 * r[which]["n"]
                              and r.get("snr_est", float("nan")) >= 2.0)}


#: edges of the estimated C-atom SNR bands of :func:`snr_bands`
SNR_EDGES = (0.0, 1.0, 2.0, 3.0, 4.0, float("inf"))


def snr_bands(rows: list[dict], which: str = "reported", edges=SNR_EDGES) -> list[dict]:
    """Per dose and band of the estimated C-atom SNR (``edges``; frames without an estimate left out):
    frames, atoms in the zones, false ones, those > :data:`FAR_A` off, pooled precision both ways and the
    frames over 1 % false both ways. Pooled over whatever ``rows`` hold (several seeds: concatenate)."""
    out = []
    for dose in sorted({r["dose"] for r in rows}):
        for lo, hi in zip(edges[:-1], edges[1:]):
            rr = [r for r in rows if r["dose"] == dose and lo <= r.get("snr_est", float("nan")) < hi]
            if not rr:
                continue
            n = sum(r[which]["n"] for r in rr)
            false = sum(r[which]["false"] for r in rr)
            far = sum(r[which]["far_false"] for r in rr)
            out.append({"dose": dose, "snr_lo": lo, "snr_hi": hi, "frames": len(rr), "atoms": n, "false": false,
                        "far_false": far, "pooled": (n - false) / n if n else float("nan"),
                        "pooled_far": (n - far) / n if n else float("nan"),
                        "failing": sum(1 for r in rr if r[which]["false"] > 0.01 * r[which]["n"]),
                        "failing_far": sum(1 for r in rr if r[which]["far_false"] > 0.01 * r[which]["n"])})
    return out


def format_snr_bands(bands: list[dict]) -> str:
    """Markdown table of :func:`snr_bands`."""
    fmt = lambda v: "-" if v != v else f"{v:.4f}"  # noqa: E731
    lines = [f"| dose (e/A^2) | estimated SNR | frames | atoms in zones | false | pooled P | frames > 1 % | "
             f"false > {FAR_A} A off | pooled P (> {FAR_A} A) | frames > 1 % (> {FAR_A} A) |", "|" + "---|" * 10]
    for b in bands:
        band = f">= {b['snr_lo']:g}" if b["snr_hi"] == float("inf") else f"{b['snr_lo']:g}-{b['snr_hi']:g}"
        lines.append(f"| {b['dose']:.0e} | {band} | {b['frames']} | {b['atoms']} | {b['false']} | {fmt(b['pooled'])} | "
                     f"{b['failing']} | {b['far_false']} | {fmt(b['pooled_far'])} | {b['failing_far']} |")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    """Markdown: per dose x pixel size, raw maps and reported atoms (pooled precision, worst frame,
    frames above 1 % false), then per dose over every pixel size."""
    fmt = lambda v: "-" if v != v else f"{v:.4f}"  # noqa: E731
    lines = ["| dose (e/A^2) | pixel (A) | frames with a hole | low_snr (est.) | raw: atoms in holes | raw: false | "
             "raw: pooled P | raw: worst P | raw: frames > 1 % | reported: atoms | reported: false | reported: pooled P | "
             "reported: worst P | reported: frames > 1 % (of them SNR >= 2) |", "|" + "---|" * 14]
    keys = sorted({(r["dose"], r["pixel_size_A"]) for r in rows}) + sorted({(r["dose"], None) for r in rows})
    for dose, px in keys:
        rr = [r for r in rows if r["dose"] == dose and (px is None or r["pixel_size_A"] == px)]
        a, b = summarise(rr, "raw"), summarise(rr, "reported")
        low = sum(1 for r in rr if not r.get("snr_est", float("nan")) >= 2.0)
        lines.append(f"| {dose:.0e} | {px if px is not None else 'all'} | {len(rr)} | {low} | {a['atoms']} | {a['false']} | "
                     f"{fmt(a['pooled'])} | {fmt(a['worst'])} | {a['failing']} | {b['atoms']} | {b['false']} | "
                     f"{fmt(b['pooled'])} | {fmt(b['worst'])} | {b['failing']} ({b['failing_ok']}) |")
    return "\n".join(lines)


def format_lattice_effect(eff: dict) -> str:
    """Markdown table of :func:`lattice_effect`."""
    fmt = lambda v: "-" if v != v else f"{v:.4f}"  # noqa: E731
    lines = ["| dose (e/A^2) | frames | vacuum check | atoms | precision | recall | F1 | Si | Si P | Si R |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for dose, res in eff.items():
        for key, name in (("off", "all: off"), ("on", "all: on"), ("off_snr_ok", "SNR >= 2: off"),
                          ("on_snr_ok", "SNR >= 2: on")):
            s = res[key].summary()
            lines.append(f"| {dose:.0e} | {s['frames']} | {name} | {s['atoms']} | {fmt(s['precision'])} | {fmt(s['recall'])} | "
                         f"{fmt(s['f1'])} | {s['si']} | {fmt(s['si_precision'])} | {fmt(s['si_recall'])} |")
    return "\n".join(lines)


@contextlib.contextmanager
def _recording_vacuum_check():
    """While inside: each call of :func:`engine.chem.vacuum.drop_in_vacuum` (from ``find_atoms``) appends
    its ``(atoms, image, maps, min_dip)`` to the yielded list, then runs as usual."""
    from engine.chem import vacuum

    calls, original = [], vacuum.drop_in_vacuum

    def recording(atoms, image, maps, min_dip, *args, **kw):
        calls.append((atoms, image, maps, min_dip))
        return original(atoms, image, maps, min_dip, *args, **kw)

    vacuum.drop_in_vacuum = recording
    try:
        yield calls
    finally:
        vacuum.drop_in_vacuum = original


def atom_rows(inferencer, dose: float, pixel_size_A: float, frames: int, variant: str = VARIANT,
              seed: int | None = None) -> list[dict]:
    """Per held-out frame of one cell that the vacuum check judges (a hole or not): every atom it was given,
    with what it measures there (:func:`engine.chem.vacuum.vacuum_dip` with ``judge_all``: ``dip``, ``rise``
    in noise sigma and ``rise_typical`` in typical C atoms, ``own`` contrast), the network's ``confidence``,
    ``d`` (A to the nearest true atom), ``matched`` (one-to-one within 0.5 A), ``zone`` (in the scored zone
    of :func:`hole_score`; all False without a hole) and ``reported`` (what the analyzer reports), and the
    frame's ``typical`` C atom's rise in noise sigma."""
    from engine.chem.vacuum import vacuum_dip
    from engine.pipeline import analyze_frame
    from lab.infer.heldout import cell_frames
    from stemwatch.config import Config
    from streamer.frame import Frame

    cfg = Config()
    rows = []
    for k, (image, xy, sp, fpx, ign) in enumerate(cell_frames(dose, pixel_size_A, variant, frames,
                                                              **({} if seed is None else {"seed": seed}))):
        allxy = np.concatenate([xy, ign]) if len(ign) else xy
        with _recording_vacuum_check() as calls:
            fc = analyze_frame(Frame(image, "atoms", k, 0.0, fpx), inferencer, cfg)
        if fc.chemistry is None or not calls:
            continue
        atoms, img, maps, min_dip = calls[-1]
        res = vacuum_dip(atoms, img, maps, min_dip, judge_all=True)
        if res is None:
            continue
        dip, _threshold, own, dark = res
        xy_a = np.asarray(atoms.xy_px, np.float64)
        core = hole_core(allxy, image.shape, fpx)
        matched = np.zeros(len(xy_a), bool)
        matched[match_mutual(xy_a * fpx, allxy * fpx, ATOM_MATCH_RADIUS_A)[0]] = True
        rep = np.asarray(fc.chemistry.atoms.xy_px, np.float64)
        reported = (cKDTree(rep).query(xy_a)[0] < 1e-6) if len(rep) else np.zeros(len(xy_a), bool)
        finite = np.isfinite(dark[1]) & (dark[1] != 0)
        rows.append({"dose": dose, "pixel_size_A": pixel_size_A, "variant": variant, "frame": k,
                     "typical": float(np.median(dark[0][finite] / dark[1][finite])) if finite.any() else float("nan"),
                     "dip": dip, "rise": dark[0], "rise_typical": dark[1], "own": own,
                     "confidence": np.asarray(atoms.confidence, np.float64), "species": np.asarray(atoms.species),
                     "d": cKDTree(allxy * fpx).query(xy_a * fpx)[0], "matched": matched,
                     "zone": in_zone(xy_a, core, fpx) if core.any() else np.zeros(len(xy_a), bool),
                     "reported": reported})
    return rows


def format_atoms(rows: list[dict], min_dip: float | None = None) -> str:
    """The reported false atoms in the hole zones, one line each with what the vacuum check measures at
    them, then, to compare, per frame the reported true atoms away from any hole whose surroundings dip by
    more than ``min_dip`` (default :data:`engine.chem.vacuum.DARK_MIN_DIP`) and at which the frame lies
    below the lattice level (the lattice a rule against the false ones must keep)."""
    from engine.chem.vacuum import DARK_MIN_DIP

    min_dip = DARK_MIN_DIP if min_dip is None else min_dip
    rng = lambda v: f"{np.min(v):.2f}..{np.max(v):.2f}"  # noqa: E731
    out = ["reported false atoms in hole zones: frame (typical C atom's rise in sigma): d to the nearest true atom (A), "
           "dip (units), rise (sigma; typical atoms), own (sigma), confidence"]
    for r in rows:
        name = f"{r['variant']} {r['dose']:.0e} {r['pixel_size_A']} #{r['frame']} ({r['typical']:.2f})"
        for i in np.flatnonzero(r["zone"] & r["reported"] & ~r["matched"]):
            out.append(f"  {name}: d {r['d'][i]:.2f}, dip {r['dip'][i]:.2f}, rise {r['rise'][i]:.1f}; "
                       f"{r['rise_typical'][i]:.2f}, own {r['own'][i]:.1f}, confidence {r['confidence'][i]:.2f}")
    out.append(f"reported true atoms outside hole zones with dip > {min_dip} below the lattice level: frame: count, "
               "dip, rise (sigma; typical atoms), own, confidence; the frame's atoms' rise (5th percentile, median)")
    for r in rows:
        lat = r["reported"] & r["matched"] & ~r["zone"]
        sel = lat & (r["dip"] > min_dip) & (r["rise"] < 0)
        if sel.any():
            p5, p50 = np.percentile(r["rise"][lat], [5, 50])
            out.append(f"  {r['variant']} {r['dose']:.0e} {r['pixel_size_A']} #{r['frame']} ({r['typical']:.2f}): "
                       f"{int(sel.sum())}, dip {rng(r['dip'][sel])}, rise {rng(r['rise'][sel])}; "
                       f"{rng(r['rise_typical'][sel])}, own {rng(r['own'][sel])}, confidence {rng(r['confidence'][sel])}; "
                       f"{p5:.1f}, {p50:.1f}")
    return "\n".join(out)


def main(argv=None) -> int:
    from engine.infer import Inferencer
    from stemwatch.config import InferenceConfig

    p = argparse.ArgumentParser(prog="python -m lab.infer.holes", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=6, help="frames per dose x pixel-size cell and variant (default 6)")
    p.add_argument("--doses", type=float, nargs="+", default=list(DOSES), help="doses (e/A^2)")
    p.add_argument("--pixel-sizes", type=float, nargs="+", default=list(PIXEL_SIZES_A), help="pixel sizes (A)")
    p.add_argument("--variants", nargs="+", default=[VARIANT, "plain"], help="held-out variants (default holes plain)")
    p.add_argument("--seed", type=int, default=None,
                   help="frames of another seed than the held-out 90417 (development / fresh checks)")
    p.add_argument("--by-snr", type=int, nargs="*", default=None, metavar="SEED",
                   help="instead: the reported atoms' precision in the hole zones per dose and band of estimated C-atom "
                        "SNR, pooled over these seeds (none given: the held-out one, or --seed)")
    p.add_argument("--fit-sigma", type=float, default=None,
                   help="engine.chem.vacuum.FIT_SIGMA for this run (0: the joint fit off, as before it; default: as shipped)")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="FP32 ONNX model to score (default: the shipped one; its _int8 file beside it is used as the "
                        "analyzer would, cpu_precision auto)")
    p.add_argument("--worst", type=int, default=10, help="list this many worst frames of the reported atoms")
    p.add_argument("--atoms", action="store_true",
                   help="instead: the reported false atoms in the hole zones with what the vacuum check measures at "
                        "them, and the lattice atoms near vacuum below the lattice level (docs/model.md)")
    p.add_argument("--lattice", action="store_true",
                   help="instead: detection F1 and Si precision/recall of the reported atoms on the plain held-out "
                        "frames with the vacuum check off and on")
    a = p.parse_args(argv)
    if a.frames < 1:
        print("--frames must be >= 1", file=sys.stderr)
        return 2
    if a.fit_sigma is not None:
        if a.fit_sigma < 0:
            print("--fit-sigma must be >= 0", file=sys.stderr)
            return 2
        from engine.chem import vacuum

        vacuum.FIT_SIGMA = a.fit_sigma
    icfg = InferenceConfig(backend="onnx", model_path=a.model)
    if a.atoms:
        with Inferencer(icfg) as inf:
            rows = [r for v in a.variants for d in a.doses for px in a.pixel_sizes
                    for r in atom_rows(inf, d, px, a.frames, v, seed=a.seed)]
        print(format_atoms(rows))
        return 0
    if a.by_snr is not None:
        seeds = a.by_snr or [a.seed]
        with Inferencer(icfg) as inf:
            rows = [r for seed in seeds for r in sweep(inf, a.doses, a.pixel_sizes, a.frames, a.variants,
                                                       progress=True, seed=seed)]
        print(format_snr_bands(snr_bands(rows)))
        return 0
    if a.lattice:
        with Inferencer(icfg) as inf:
            eff = lattice_effect(inf, a.doses, a.pixel_sizes, a.frames, seed=a.seed)
        print(format_lattice_effect(eff))
        return 0
    with Inferencer(icfg) as inf:
        rows = sweep(inf, a.doses, a.pixel_sizes, a.frames, a.variants, progress=True, seed=a.seed)
    print(format_table(rows))
    for which in ("raw", "reported"):
        s = summarise(rows, which)
        print(f"{which}: {s['frames']} frames, {s['atoms']} atoms in holes, {s['false']} false ({s['core_false']} deep in "
              f"the hole, {s['far_false']} > {FAR_A} A from every true atom), pooled precision {s['pooled']:.4f}, worst "
              f"{s['worst']:.4f} ({s['worst_frame']}), frames > 1 % false: {s['failing']} (counting only those > {FAR_A} A "
              f"off: {s['failing_far']})")
    for dose in sorted({r["dose"] for r in rows}):
        s = summarise([r for r in rows if r["dose"] == dose], "reported")
        print(f"reported at {dose:.0e}: {s['false']} false of {s['atoms']} on {s['failing']} frames > 1 % "
              f"({s['failing_ok']} of SNR >= 2); > {FAR_A} A off: {s['far_false']} on {s['failing_far']} frames")
    bad = sorted(rows, key=lambda r: r["reported"]["precision"] if r["reported"]["n"] else 2.0)[: a.worst]
    for r in bad:
        print(f"  {r['variant']} {r['dose']:.0e} {r['pixel_size_A']} #{r['frame']}: hole {r['hole_A2']:.0f} A^2, "
              f"SNR est {r['snr_est']:.2f} true {r['snr_true']:.2f}, material {r['material']}, "
              f"raw {r['raw']['false']}/{r['raw']['n']}, reported {r['reported']['false']}/{r['reported']['n']} "
              f"({r['reported']['far_false']} > {FAR_A} A off)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
