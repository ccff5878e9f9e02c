"""What the overlayer region (engine/health/material_overlayer.py) leaves out, on simulated frames.

Laboratory code (not imported by the runtime). Frames over the simulator's imaging ranges (pixel size
log-uniform in 0.03-0.3 A/px, dose log-uniform in 1e4-1e6 e/A^2): ``--frames`` graphene frames with a
contamination patch (lab.material_eval's ``graphene_contamination``: engine.sim.structures.add_contamination,
random light atoms over the lattice, 1-3 lobes of 3-15 A, 0.25 atoms/A^2 at the centre) drawn from
``seed``, and as many clean frames (graphene, graphene with a large hole, graphene with 1-4 Si/nm^2; no
contamination) drawn from ``seed + 1``. Each frame goes through :class:`engine.pipeline.Pipeline` with
the overlayer region and the per-atom rule (``engine.pipeline.OVERLAYER_SI``: a Si on contamination read as
C) and without either (``overlayer_region`` replaced by None, ``OVERLAYER_SI`` False; ``--no-atom-rule``:
the rule off in both, so "after" is the region alone) and is scored, on frames called graphene with C-atom
SNR >= 2, against the simulator's atoms:

* false Si near contamination: reported Si (species != C) not within 0.5 A of a lattice Si or of a heavy
  adatom (species != C, not contamination) and within 3 A of a contamination atom (until 2026-12-05 a heavy
  adatom found where it is, near contamination, was counted as a false Si);
  of them, those the analyzer flags at the frame's edge (``Atoms.border``: within ``border_A`` = 1 A, half-visible
  columns; the model card's detection table leaves that band out) are also counted apart;
* true Si kept on clean graphene: lattice Si more than 3 A from any contamination atom that a reported
  Si lies within 0.5 A of;
* lattice atoms kept on clean graphene: the same for lattice atoms and any reported atom;
* clean graphene left out: 1 A cells holding a lattice atom and no contamination atom within 3 A,
  outside the analysed mask (``material.mask``), over all such cells;
* frames given an overlayer region (the reason names it); Si read as C by the per-atom rule (the
  reason counts them).

``--movies`` also runs static (no drift) ``MaterialMovie("graphene_hole")`` movies of 10 frames, 512^2 at
0.2 A/px (seeds 30 and 31 by default), with and without the region, and counts their events (the sample
is static: every transformation is false). Events are the transformations (those that may alarm the
operator, engine.track.categories); the bookkeeping of a drifting field (a Si that entered or left the
frame) is counted apart (until 2026-12-03's fourth session both were counted together).

With the overlayer region held over recent frames (engine/health/overlayer_hold.py) the movies run in
three modes (:func:`run_movie`: ``none`` (no region, no per-atom rule), ``frame``, ``held``); ``--contaminated-movies`` adds
``graphene_hole`` movies with a contamination patch forced, ``--drifts`` drifting ones; each movie frame
is also scored as above against the simulator's truth (summed over the frames).

    python -m lab.contamination_eval [--frames 15] [--seed 81] [--size 512] [--movies 30,31]
        [--contaminated-movies 36,40] [--event-movies 30,31] [--drifts 0:0,0.3:0.5] [--no-atom-rule] [--si-hold]
        [--thin-path]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from unittest import mock

import numpy as np


def contaminated(seed: int, n: int, size: int):
    """``n`` graphene frames with a contamination patch (module docstring)."""
    from lab.material_eval import draw

    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield draw("graphene_contamination", rng, size, (1e4, 1e6))


def clean(seed: int, n: int, size: int):
    """``n`` graphene frames without contamination: plain, one large hole, 1-4 Si/nm^2 in turn."""
    from engine.sim.materials import material_example

    rng = np.random.default_rng(seed)
    for t in range(n):
        px = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))))
        kw = {"contamination": False}
        if t % 3 == 2:
            kw["si_per_nm2"] = float(rng.uniform(1.0, 4.0))
        yield material_example(rng, ("graphene", "graphene_hole", "graphene")[t % 3], shape_px=(size, size),
                               pixel_size_A=px, dose_range=(1e4, 1e6), **kw)


def stress(seed: int, n: int, size: int):
    """``n`` clean graphene frames that raise the floor without contamination: 4 Si/nm^2 under a probe
    tail of 60 % of the intensity and 7 A FWHM (the other imaging parameters random), no holes, 0.15-0.3 A/px."""
    from engine.sim.imaging import ImagingParams
    from engine.sim.materials import material_example

    rng = np.random.default_rng(seed)
    for _ in range(n):
        px = float(np.exp(rng.uniform(np.log(0.15), np.log(0.3))))
        ip = ImagingParams.random(rng, (1e4, 1e6))
        ip.tail_fraction, ip.tail_fwhm_A = 0.6, 7.0
        yield material_example(rng, "graphene", shape_px=(size, size), pixel_size_A=px, params=ip,
                               contamination=False, holes=False, si_per_nm2=4.0)


def dopants(seed: int, n: int, size: int):
    """``n`` clean graphene frames (no contamination; holes and adatoms as drawn) with 1-4 Si/nm^2, at
    0.03-0.3 A/px: where the Si's probe tails light the hollows between them, which a contamination rule
    must not read as an overlayer. (lab.material_eval's ``graphene_dopants`` draws contamination on ~30 %
    of its frames.)"""
    from engine.sim.materials import material_example

    rng = np.random.default_rng(seed)
    for _ in range(n):
        px = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))))
        yield material_example(rng, "graphene", shape_px=(size, size), pixel_size_A=px, dose_range=(1e4, 1e6),
                               contamination=False, si_per_nm2=float(rng.uniform(1.0, 4.0)))


def score(result, ex) -> dict | None:
    """The module docstring's counts for one frame's result (None: not scored)."""
    from scipy.spatial import cKDTree

    ch = result.chemistry
    if ch is None or result.material is None or not result.material.is_graphene \
            or not (result.health is not None and result.health.snr >= 2):
        return None
    px = ex.pixel_size_A
    h, w = ex.image.shape
    inside = (ex.xy_px[:, 0] >= 0) & (ex.xy_px[:, 0] < w) & (ex.xy_px[:, 1] >= 0) & (ex.xy_px[:, 1] < h)
    cont = (~ex.lattice) & (ex.z <= 8)
    lat = ex.lattice & inside
    far = np.full(len(ex.xy_px), np.inf)
    if cont.any():
        far = cKDTree(ex.xy_px[cont]).query(ex.xy_px)[0] * px
    clean_lat = lat & (far > 3.0)
    clean_si = clean_lat & (ex.species == 1)
    xy = np.asarray(ch.atoms.xy_px, float).reshape(-1, 2)
    si = np.asarray(ch.atoms.species) != 0
    out = {"si": int(si.sum()), "false_si_near": 0, "false_si_edge": 0, "true_si": int(clean_si.sum()),
           "true_si_kept": 0, "lattice": int(clean_lat.sum()), "lattice_kept": 0}
    if len(xy):
        tree = cKDTree(xy)
        d_lat = tree.query(ex.xy_px[clean_lat])[0] * px
        out["lattice_kept"] = int((d_lat < 0.5).sum())
        if si.any():
            d_si = cKDTree(xy[si]).query(ex.xy_px[clean_si])[0] * px if clean_si.any() else np.zeros(0)
            out["true_si_kept"] = int((d_si < 0.5).sum())
            # a reported Si or heavy atom is true where the sample has one: a lattice Si or a heavy adatom
            true_x = ~cont & (ex.species != 0)
            d_true = cKDTree(ex.xy_px[true_x]).query(xy[si])[0] * px if true_x.any() else np.full(int(si.sum()), np.inf)
            d_cont = cKDTree(ex.xy_px[cont]).query(xy[si])[0] * px if cont.any() else np.full(int(si.sum()), np.inf)
            is_false = (d_true > 0.5) & (d_cont < 3.0)
            out["false_si_near"] = int(is_false.sum())
            # of them, the half-visible ones the analyzer flags at the frame's edge (Atoms.border, border_A = 1 A)
            border = getattr(ch.atoms, "border", None)
            if border is not None:
                out["false_si_edge"] = int((is_false & np.asarray(border, bool)[si]).sum())
    # clean graphene cells (1 A) outside the analysed mask
    g = 1.0 / px
    cells = np.unique((ex.xy_px[clean_lat, 1] // g).astype(np.int64) * 100000 + (ex.xy_px[clean_lat, 0] // g).astype(np.int64))
    mask = result.material.mask
    out["cells"] = int(len(cells))
    if mask is None:
        out["cells_out"] = 0
    else:
        r = np.minimum(((cells // 100000) + 0.5) * g, h - 1).astype(np.int64)
        c = np.minimum(((cells % 100000) + 0.5) * g, w - 1).astype(np.int64)
        out["cells_out"] = int((~np.asarray(mask, bool)[r, c]).sum())
    out["region"] = int("hollows are filled" in (result.material.reason or ""))
    m = re.search(r"(\d+) Si on contamination", result.material.reason or "")
    out["read_as_c"] = int(m.group(1)) if m else 0
    return out


@contextlib.contextmanager
def _without_guards():
    """The analyzer with neither the overlayer region (``overlayer_region`` replaced by None) nor the
    per-atom rule (``OVERLAYER_SI`` False) nor the heavy atoms off the lattice left out (``OFF_LATTICE``
    False, since 2026-12-03's fourth session): the "before" frames and the "none" movie mode."""
    import engine.pipeline as pipeline_module

    with mock.patch.object(pipeline_module, "overlayer_region", lambda *a, **k: None), \
            mock.patch.object(pipeline_module, "OVERLAYER_SI", False), \
            mock.patch.object(pipeline_module, "OFF_LATTICE", False):
        yield


def analyzer(model: str | None = None):
    """The analyzer on the ONNX Runtime backend with ``model`` (None: the shipped one); the tests of the
    contamination guards make theirs with it too."""
    from engine.pipeline import Pipeline
    from stemwatch.config import Config

    return Pipeline(Config().replace(inference={"backend": "onnx", "model_path": model}))


def run_frames(examples, tag: str, progress: bool = True, model: str | None = None) -> list[dict]:
    from streamer.frame import Frame

    pipe = analyzer(model)
    rows = []
    try:
        for t, ex in enumerate(examples):
            got = {}
            for mode in ("before", "after"):
                pipe.reset()
                f = Frame(data=ex.image, series=f"{tag}-{t}-{mode}", seq=0, t_acquired=0.0,
                          pixel_size_A=ex.pixel_size_A)
                if mode == "before":
                    with _without_guards():
                        r = pipe.process(f)
                else:
                    r = pipe.process(f)
                got[mode] = score(r, ex)
            if got["before"] is None or got["after"] is None:
                continue
            row = {"t": t, "px": ex.pixel_size_A, "before": got["before"], "after": got["after"]}
            rows.append(row)
            if progress:
                b, a = got["before"], got["after"]
                print(f"  {tag} {t} {ex.pixel_size_A:.3f} A/px: false Si near {b['false_si_near']} -> "
                      f"{a['false_si_near']}, true Si {b['true_si_kept']} -> {a['true_si_kept']} of {a['true_si']}, "
                      f"lattice {b['lattice_kept']} -> {a['lattice_kept']} of {a['lattice']}, region {a['region']}",
                      file=sys.stderr, flush=True)
    finally:
        pipe.close()
    return rows


MOVIE_MODES = ("none", "frame", "held")


def _truth_example(img, truth, px):
    """The simulator's truth of a movie frame in the shape :func:`score` reads (contamination: its label)."""
    from types import SimpleNamespace

    from engine.sim.structures import LABEL

    cont = truth.label == LABEL["contamination"]
    return SimpleNamespace(image=img, pixel_size_A=px, xy_px=truth.xy_px, species=truth.species,
                           lattice=~cont & (truth.label != LABEL["adatom"]), z=np.where(cont, 6, 99))


def run_movie(seed: int, n_frames: int = 10, pixel_size_A: float = 0.2, size: int = 512, drift=(0.0, 0.0),
              bound: float = 0.0, contamination: bool | None = None, modes=MOVIE_MODES, model: str | None = None,
              contamination_step_A: float = 0.0) -> dict:
    """Events of a ``graphene_hole`` movie (the sample static, so every event is false) in each of
    ``modes``: ``none`` without the overlayer region, ``frame`` with the region of each frame alone
    (:class:`engine.health.overlayer_hold.OverlayerHold` off: neither the region nor the per-atom reading
    held), ``held`` with the region and the Si read as C of recent frames
    held (the pipeline's default). ``drift``: A per frame (y, x as MovieSpec); ``contamination``: force a
    contamination patch on the sample (None: drawn, in ~30 % of samples); ``contamination_step_A``: the
    contamination atoms walk between frames (MaterialMovie's; 0: static). Each frame is also scored as
    :func:`score` against the simulator's truth (summed over the frames)."""
    from engine.sim.materials import MaterialMovie
    from engine.sim.movie import MovieSpec
    from streamer.frame import Frame

    spec = MovieSpec(n_frames=n_frames, shape_px=(size, size), pixel_size_A=pixel_size_A, drift_A_per_frame=tuple(drift),
                     drift_bound_A=bound, seed=seed)
    kw = {} if contamination is None else {"contamination": bool(contamination)}
    frames = list(MaterialMovie(spec, "graphene_hole", contamination_step_A=contamination_step_A, **kw).frames())
    out = {}
    for mode in modes:
        pipe = analyzer(model)
        if mode == "frame":
            pipe.overlayer_hold.hold_frames = 0
        events, si, regions, held, scores, si_held = [], [], 0, 0, [], 0
        try:
            with _without_guards() if mode == "none" else contextlib.nullcontext():
                for k, (img, truth) in enumerate(frames):
                    r = pipe.process(Frame(data=img, series=f"movie{seed}", seq=k, t_acquired=float(k),
                                           pixel_size_A=pixel_size_A))
                    events += list(r.events)
                    if r.chemistry is not None:
                        si.append(int((np.asarray(r.chemistry.atoms.species) != 0).sum()))
                    reason = (r.material.reason if r.material else "") or ""
                    regions += int("hollows are filled" in reason)
                    held += int("held)" in reason)
                    m = re.search(r"\((\d+) of them within", reason)
                    si_held += int(m.group(1)) if m else 0
                    sc = score(r, _truth_example(img, truth, pixel_size_A))
                    if sc is not None:
                        scores.append(sc)
        finally:
            pipe.close()
        keys = ("si", "false_si_near", "false_si_edge", "true_si", "true_si_kept", "lattice", "lattice_kept")
        alarms = [e for e in events if e.category != "bookkeeping"]
        out[mode] = {"events": len(alarms), "bookkeeping": len(events) - len(alarms),
                     "kinds": sorted({e.kind for e in alarms}), "si_per_frame": si,
                     "frames_with_region": regions, "frames_held": held, "si_held": si_held,
                     **{k: sum(x[k] for x in scores) for k in keys}}
    return out


def run_event_movie(seed: int, drift=(0.0, 0.0), n_frames: int = 20, model: str | None = None, extras=()) -> dict:
    """Clean graphene with true events (engine.sim MovieSimulator, 512^2 at 0.2 A/px, 6 Si3 and 2 Si4,
    a random event every ~3 frames; the bundled movies' imaging for even seeds, random imaging for odd
    ones; no contamination): the region held (``held``) against decided per frame (``frame``). The
    region must not appear there: the events must be the same. ``extras``: static defects of
    engine.sim.movie.EXTRA_KINDS added (``("contamination",) * 2``: true events on a field where the contamination
    guards are at work; ``changed``: the frames on which engine.health.overlayer_change measured the change)."""
    from engine.sim.movie import MovieSimulator, MovieSpec
    from streamer.frame import Frame

    spec = MovieSpec(n_frames=n_frames, shape_px=(512, 512), pixel_size_A=0.2, drift_A_per_frame=tuple(drift),
                     seed=seed, dopants=("si3",) * 6 + ("si4",) * 2, event_rate_per_frame=0.3,
                     min_event_gap_frames=2, imaging="random" if seed % 2 else None, extras=tuple(extras))
    sim = MovieSimulator(spec)
    frames = [item[0] if isinstance(item, tuple) else item for item in sim.frames()]
    out = {"true_events": len(sim.events)}
    for mode in ("frame", "held"):
        pipe = analyzer(model)
        if mode == "frame":
            pipe.overlayer_hold.hold_frames = 0
        events, regions, si, changed = [], 0, 0, 0
        try:
            for k, img in enumerate(frames):
                r = pipe.process(Frame(data=img, series=f"events{seed}", seq=k, t_acquired=float(k), pixel_size_A=0.2))
                events += [(e.frame, e.kind, e.atom_id) for e in r.events]
                regions += int("hollows are filled" in ((r.material.reason if r.material else "") or ""))
                changed += int(pipe.field_change.change is not None)
                si += int((np.asarray(r.chemistry.atoms.species) != 0).sum()) if r.chemistry is not None else 0
        finally:
            pipe.close()
        out[mode] = {"events": events, "frames_with_region": regions, "si": si, "changed": changed}
    return out


def movie_line(seed: int, m: dict, what: str) -> str:
    modes = [k for k in MOVIE_MODES if k in m]
    return (f"movie seed {seed} ({what}): events (transformations; bookkeeping "
            + " -> ".join(str(m[k]["bookkeeping"]) for k in modes) + " more) "
            + " -> ".join(str(m[k]["events"]) for k in modes)
            + " (" + " -> ".join(str(m[k]["kinds"]) for k in modes) + "); false Si near contamination "
            + " -> ".join(str(m[k]["false_si_near"]) for k in modes) + " (at the frame's edge "
            + " -> ".join(str(m[k]["false_si_edge"]) for k in modes) + "); true Si kept "
            + " -> ".join(f"{m[k]['true_si_kept']}" for k in modes) + f" of {m[modes[-1]]['true_si']}; frames with a "
            f"region {m[modes[-1]]['frames_with_region']} (held added to {m[modes[-1]]['frames_held']}); "
            f"Si read as C by the held positions {m[modes[-1]].get('si_held', 0)}; "
            "Si a frame " + " -> ".join(str(m[k]["si_per_frame"]) for k in modes) + f"  [{' -> '.join(modes)}]")


def summary(rows: list[dict]) -> dict:
    keys = ("si", "false_si_near", "false_si_edge", "true_si", "true_si_kept", "lattice", "lattice_kept", "cells",
            "cells_out", "region", "read_as_c")
    return {m: {k: sum(r[m][k] for r in rows) for k in keys} for m in ("before", "after")}


#: the contamination rules' parameters a flag overrides (a float each, 0 / 1 for a switch; not given: the shipped
#: value): (flag, the engine.health.material_overlayer constant, help)
_RULE_FLAGS = (
    ("--si-rel-net", "SI_REL_NET",
     "the per-atom rule also judges a short-bonded Si "
     "dimmer than this fraction of the frame's median Si to be contamination "
     "(material_overlayer.SI_REL_NET; default: the shipped 0.87; 0: off, as before 2026-12-04)"),
    ("--si-z-net", "SI_Z_NET",
     "the per-atom rule also judges, whatever its bonds, a Si "
     "dimmer than --si-rel-net x the frame's median Si and more than this many robust spreads below it "
     "to be contamination (material_overlayer.SI_Z_NET; default: the shipped 5; 0: off, as before the "
     "third session of 2026-12-04)"),
    ("--si-near", "SI_NEAR_A",
     "the per-atom rule also judges a Si within this many A "
     "of the contamination found (left out, or a Si judged) that reads dimmer than 0.95 x the frame's Si or "
     "as wide as its C columns (material_overlayer.SI_NEAR_A; default: the shipped 4.0; 0: off, as before "
     "2026-12-05)"),
    ("--si-wide-max-rel", "SI_WIDE_MAX_REL",
     "the as-wide-as-C rule's brightness cap, in the "
     "frame's median Si (material_overlayer.SI_WIDE_MAX_REL; default: the shipped none, inf; 1.1: as "
     "before 2026-12-05)"),
    ("--si-wide-edge", "SI_WIDE_EDGE_A",
     "the as-wide-as-C rule judges a Si this many A or more from the frame's edge (its column's disc must "
     "also lie in the frame; material_overlayer.SI_WIDE_EDGE_A; default: the shipped 0; 3: as before the "
     "second session of 2026-12-05)"),
    ("--si-wide-along-edge", "SI_WIDE_ALONG_EDGE",
     "1: the as-wide-as-C rule reads a half-visible column (its disc leaves the frame on one side) by its width "
     "along the edge (material_overlayer.SI_WIDE_ALONG_EDGE; default: the shipped 1; 0: off, as before the fourth "
     "session of 2026-12-05)"),
    ("--region-any-seed", "SEED_ANY_ATOM",
     "1: the overlayer region is seeded by any atom on a high floor, C too (material_overlayer.SEED_ANY_ATOM; "
     "tried 2026-12-05, off); 0: by heavy atoms only (the shipped default)"),
    ("--si-min-bond", "SI_MIN_BOND_A",
     "the per-atom rule also judges, whatever its column, a Si with a bond shorter than this (A) to be contamination "
     "(material_overlayer.SI_MIN_BOND_A; default: the shipped 1.35; 0: off, as before the third session of "
     "2026-12-05)"),
    ("--si-wide", "SI_WIDE",
     "the per-atom rule also judges, whatever its bonds, a Si "
     "whose column is at least this many times as wide (RMS radius) as the frame's C columns' to be "
     "contamination (material_overlayer.SI_WIDE; default: the shipped 1.0; 0: off, as before the fourth "
     "session of 2026-12-04)"),
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=15, help="contaminated frames, and as many clean ones (default 15)")
    ap.add_argument("--seed", type=int, default=81, help="random seed (clean frames: seed + 1)")
    ap.add_argument("--size", type=int, default=512, help="frame side (px)")
    ap.add_argument("--dopant-frames", type=int, default=0, help="clean frames with 1-4 Si/nm^2 (default 0: none)")
    ap.add_argument("--dopant-seed", type=int, default=5201, help="their random seed (default 5201, development)")
    ap.add_argument("--movies", default="30,31", help="static graphene_hole movie seeds ('' for none)")
    ap.add_argument("--contaminated-movies", default="", help="graphene_hole movie seeds with a contamination "
                    "patch forced ('' for none)")
    ap.add_argument("--event-movies", default="", help="clean graphene movie seeds with true events "
                    "(run_event_movie; '' for none)")
    ap.add_argument("--event-extras", default="", help="static defects added to the event movies, comma-separated "
                    "kinds of engine.sim.movie.EXTRA_KINDS (e.g. contamination,contamination: true events on a field "
                    "where contamination is found; default none: clean)")
    ap.add_argument("--no-atom-rule", action="store_true", help="the per-atom rule (pipeline.OVERLAYER_SI, "
                    "material_overlayer.overlayer_si) off in every mode: the overlayer region alone")
    ap.add_argument("--contamination-step", type=float, default=0.0, help="the contaminated movies' contamination "
                    "atoms walk this RMS step (A per axis) between frames, as real hydrocarbon does under the beam "
                    "(engine.sim MaterialMovie contamination_step_A; default 0: static, as every earlier measurement)")
    ap.add_argument("--drifts", default="0:0", help="movie drifts, A per frame as x:y (MovieSpec.s drift_A_per_frame), "
                    "comma-separated (default 0:0, static)")
    ap.add_argument("--thin-path", action="store_true", help="the overlayer region's thin path on "
                    "(engine.health.material_overlayer.THIN_PATH, off by default)")
    for flag, _, text in _RULE_FLAGS:
        ap.add_argument(flag, type=float, default=None, help=text)
    ap.add_argument("--unbonded-dim", type=float, default=None, help="a heavy atom bonded to no ring of the "
                    "lattice is left out when its column is dimmer than this many C columns "
                    "(engine.health.off_lattice.DIM_MAX_NET; default: the shipped 3.0; 0: off, as before the third "
                    "session of 2026-12-05)")
    ap.add_argument("--si-read-as-c", action="store_true", help="the Si the per-atom rule judges to be contamination "
                    "are read as C, as before 2026-12-04, not left out (pipeline.OVERLAYER_SI_DISCS off)")
    ap.add_argument("--si-change-max", type=float, default=None, help="a reported Si around which the field changes "
                    "between frames by more than this many times its noise is judged contamination "
                    "(engine.health.overlayer_change.CHANGE_MAX; default: the shipped value; 0: off, as before "
                    "2026-12-06)")
    ap.add_argument("--si-hold", action="store_true", help="the per-atom reading held over a series "
                    "(pipeline.OVERLAYER_SI_HOLD, off by default) in the held mode")
    ap.add_argument("--model", default=None, help="FP32 ONNX model (default: the shipped one; its INT8 variant beside "
                    "it is used where the analyzer would use the shipped one's)")
    a = ap.parse_args(argv)
    if not a.contamination_step >= 0:
        ap.error(f"--contamination-step must be >= 0 A, got {a.contamination_step}")
    import engine.pipeline as pipeline_module
    from engine.health import material_overlayer

    if a.si_hold:
        pipeline_module.OVERLAYER_SI_HOLD = True
    if a.si_change_max is not None:
        if not a.si_change_max >= 0:
            ap.error(f"--si-change-max must be >= 0, got {a.si_change_max}")
        from engine.health import overlayer_change

        overlayer_change.CHANGE_MAX = float(a.si_change_max)
    if a.si_read_as_c:
        pipeline_module.OVERLAYER_SI_DISCS = False
    for flag, name, _ in _RULE_FLAGS:
        value = getattr(a, flag[2:].replace("-", "_"))
        if value is not None:
            setattr(material_overlayer, name, float(value))
    if a.thin_path:
        material_overlayer.THIN_PATH = True
    if a.unbonded_dim is not None:
        from engine.health import off_lattice

        off_lattice.DIM_MAX_NET = float(a.unbonded_dim)
    if a.no_atom_rule:
        pipeline_module.OVERLAYER_SI = False
    if a.frames > 0:
        print(f"seed {a.seed} (clean {a.seed + 1}), {a.frames} + {a.frames} frames of {a.size}^2; scored: graphene, "
              "SNR >= 2\n")
    sets = [] if a.frames <= 0 else [("contaminated", contaminated(a.seed, a.frames, a.size)),
                                     ("clean", clean(a.seed + 1, a.frames, a.size)),
                                     ("clean, 4 Si/nm^2, wide tail", stress(a.seed + 2, max(1, a.frames // 3), a.size))]
    if a.dopant_frames > 0:
        sets.append((f"clean, 1-4 Si/nm^2 (seed {a.dopant_seed}, {a.size}^2)",
                     dopants(a.dopant_seed, a.dopant_frames, a.size)))
    if sets:
        print("| frames | n | frames with a region | Si read as C | reported Si | false Si within 3 A of contamination | "
              "true Si kept (clean graphene) | lattice atoms kept (clean graphene) | clean graphene left out |")
        print("|---|---|---|---|---|---|---|---|---|")
    for name, ex in sets:
        rows = run_frames(ex, name, model=a.model)
        s = summary(rows)
        b, f = s["before"], s["after"]
        print(f"| {name} | {len(rows)} | {f['region']} | {f['read_as_c']} | {b['si']} -> {f['si']} | {b['false_si_near']} -> "
              f"{f['false_si_near']} ({f['false_si_edge']} at the edge) | {b['true_si_kept']} -> {f['true_si_kept']} of {f['true_si']} "
              f"({100 * f['true_si_kept'] / max(b['true_si_kept'], 1):.2f} %) | {b['lattice_kept']} -> "
              f"{f['lattice_kept']} of {f['lattice']} ({100 * f['lattice_kept'] / max(b['lattice_kept'], 1):.2f} %) | "
              f"{100 * b['cells_out'] / max(b['cells'], 1):.2f} -> {100 * f['cells_out'] / max(f['cells'], 1):.2f} % |",
              flush=True)
    drifts = [tuple(float(v) for v in d.split(":")) for d in a.drifts.split(",") if d.strip()]
    extras = tuple(x.strip() for x in a.event_extras.split(",") if x.strip())
    from engine.sim.movie import EXTRA_KINDS

    if set(extras) - set(EXTRA_KINDS):
        ap.error(f"--event-extras: unknown kind(s) {sorted(set(extras) - set(EXTRA_KINDS))}; use {', '.join(EXTRA_KINDS)}")
    for seed in [int(s) for s in a.event_movies.split(",") if s.strip()]:
        for drift in drifts:
            m = run_event_movie(seed, drift=drift, model=a.model, extras=extras)
            f, h = m["frame"], m["held"]
            print(f"\n{'clean ' if not extras else ''}event movie seed {seed} (20 frames, 512^2, 0.2 A/px, drift {drift} A/frame, "
                  + (f"with {', '.join(extras)}, " if extras else "") +
                  f"{m['true_events']} true events): events {len(f['events'])} -> {len(h['events'])} "
                  f"({'identical' if f['events'] == h['events'] else 'DIFFERENT'}), frames with a region "
                  f"{f['frames_with_region']} -> {h['frames_with_region']}, Si {f['si']} -> {h['si']}, frames with the change "
                  f"measured {f['changed']} -> {h['changed']}  [frame -> held]; "
                  f"held events {sorted((fr, kind) for fr, kind, _ in h['events'])}",
                  flush=True)
    for seeds, cont, what in ((a.movies, None, "graphene_hole"),
                              (a.contaminated_movies, True, "graphene_hole with contamination")):
        for seed in [int(s) for s in seeds.split(",") if s.strip()]:
            for drift in drifts:
                step = a.contamination_step if cont else 0.0
                m = run_movie(seed, drift=drift, contamination=cont, model=a.model, contamination_step_A=step)
                walk = f", contamination walking {step:g} A a frame" if step else ""
                print("\n" + movie_line(seed, m, f"{what}, 10 frames, 512^2, 0.2 A/px, drift {drift} A/frame{walk}"),
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
