"""Held-out validation of the dopant statistics against the simulator's true rates per dose.

Each seed simulates a movie whose Si dopants switch 3 <-> 4-fold at known cross-sections
(``MovieSpec.event_cross_sections_barn``; the truth records them), runs the full pipeline
(network -> atoms -> graph -> tracker) on every frame, computes :mod:`engine.stats` from the results
and asks whether each recovered rate's 95 % interval contains the true rate.

    python -m lab.dose_rates [--seeds 20] [--first-seed 9100] [--frames 150] [--json out.json]

Criterion (issue 18): over 20 held-out seeds, >= 18 intervals contain the true rate, for each kind.
Seeds for which the simulator cannot place the dopants in view are skipped (and listed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

#: true cross-sections (barn) of the validation movies; at 1e5 e/A^2 per frame these are 4 % and 6 %
#: chances per frame (the per-frame probability 1 - exp(-sigma D) is < 1 % below sigma D)
CROSS_SECTIONS_BARN = {"si_3_to_4": 40.0, "si_4_to_3": 60.0}
KIND_TO_TRANSITION = {"si_3_to_4": "3-fold->4-fold", "si_4_to_3": "4-fold->3-fold"}
FIRST_HELD_OUT_SEED = 9100       # not a seed used by training (engine/train) or the bundled movies


def movie_spec(seed: int, n_frames: int = 150, dose_e_per_A2: float = 1e5):
    from engine.sim.movie import MovieSpec

    return MovieSpec(n_frames=n_frames, shape_px=(256, 256), pixel_size_A=0.1, dopants=("si3", "si4"),
                     min_separation_A=8.0,
                     first_dopant_centre=False, drift_A_per_frame=(0.1, 0.05), dose_e_per_A2=dose_e_per_A2,
                     event_cross_sections_barn=dict(CROSS_SECTIONS_BARN), seed=int(seed))


def run_seed(seed: int, n_frames: int = 150, pipeline=None) -> dict:
    """One held-out movie: the true rates, the recovered ones with intervals, and whether they cover."""
    from engine import stats as S
    from engine.pipeline import Pipeline
    from engine.sim.movie import MovieSimulator
    from stemwatch.config import Config
    from streamer.frame import Frame

    spec = movie_spec(seed, n_frames)
    sim = MovieSimulator(spec)
    own = pipeline is None
    pipe = pipeline or Pipeline(Config())
    pipe.reset()
    dose = float(sim.imaging.dose_e_per_A2)
    acc = S.StatsAccumulator(dose, "simulator (true dose)")
    true_events = {k: 0 for k in CROSS_SECTIONS_BARN}
    try:
        for img, truth in sim.frames():
            for e in truth.events:
                if e["kind"] in true_events:
                    true_events[e["kind"]] += 1
            fr = Frame(img, f"rates-{seed}", truth.seq, truth.seq * spec.frame_time_s, spec.pixel_size_A,
                       meta={"dose_e_per_A2": dose})
            acc.add(pipe.process(fr))
    finally:
        if own:
            pipe.close()
    st = acc.stats()
    got = {t["kind"]: t for t in st.transitions()}
    truth_rates = sim.rates_per_dose()
    out = {"seed": int(seed), "frames": n_frames, "dose_e_per_A2_per_frame": dose, "true_events": true_events,
           "kinds": {}}
    for kind, tr in KIND_TO_TRANSITION.items():
        true = truth_rates[kind]["rate_per_e_per_A2"]
        t = got.get(tr)
        if t is None:                       # no transition seen: the rate's interval is [0, 3.69 / exposure]
            a = S.STATES.index(tr.split("->")[0])
            exp = float(st.exposure["e_per_A2"][a])
            r, lo, hi = (float(x) for x in S.poisson_rate_ci(0, exp))
            t = {"count": 0, "exposure_e_per_A2": exp, "rate_per_e_per_A2": r, "rate_per_e_per_A2_lo": lo,
                 "rate_per_e_per_A2_hi": hi}
        lo, hi = t["rate_per_e_per_A2_lo"], t["rate_per_e_per_A2_hi"]
        out["kinds"][kind] = {"true_barn": true / 1e-8, "count": t["count"], "exposure_e_per_A2": t["exposure_e_per_A2"],
                              "barn": None if t["rate_per_e_per_A2"] is None else t["rate_per_e_per_A2"] / 1e-8,
                              "barn_ci95": [None if lo is None else lo / 1e-8, None if hi is None else hi / 1e-8],
                              "covers": bool(lo is not None and hi is not None and lo <= true <= hi)}
    return out


def validate(n_seeds: int = 20, first_seed: int = FIRST_HELD_OUT_SEED, n_frames: int = 150, progress=None) -> dict:
    from engine.pipeline import Pipeline
    from stemwatch.config import Config

    from engine.sim.movie import MovieSimulator

    pipe = Pipeline(Config())
    rows = []
    skipped = []
    t0 = time.time()
    seed = first_seed
    try:
        while len(rows) < n_seeds:
            try:
                MovieSimulator(movie_spec(seed, n_frames))
            except ValueError:            # the simulator cannot place both dopants in view for this seed
                skipped.append(seed)
                seed += 1
                continue
            rows.append(run_seed(seed, n_frames, pipe))
            seed += 1
            if progress:
                progress(rows[-1])
    finally:
        pipe.close()
    covered = {k: sum(r["kinds"][k]["covers"] for r in rows) for k in CROSS_SECTIONS_BARN}
    from engine.stats import poisson_rate_ci

    pooled = {}
    for k in CROSS_SECTIONS_BARN:                 # all seeds together: a sharper test of bias
        n = sum(r["kinds"][k]["count"] for r in rows)
        e = sum(r["kinds"][k]["exposure_e_per_A2"] or 0.0 for r in rows)
        rate, lo, hi = (float(x) / 1e-8 for x in poisson_rate_ci(n, e))
        pooled[k] = {"count": n, "true_events": sum(r["true_events"][k] for r in rows), "barn": rate,
                     "barn_ci95": [lo, hi], "covers": bool(lo <= CROSS_SECTIONS_BARN[k] <= hi)}
    return {"seeds": [r["seed"] for r in rows], "skipped_seeds": skipped, "frames_per_seed": n_frames,
            "cross_sections_barn": CROSS_SECTIONS_BARN, "covered": covered, "of": n_seeds, "pooled": pooled,
            "elapsed_s": time.time() - t0, "runs": rows}


def format_table(rep: dict) -> str:
    lines = [f"{'seed':>6} | " + " | ".join(f"{k}: n, barn [95 % CI] (true {v:g})" for k, v in
                                            rep["cross_sections_barn"].items())]
    for r in rep["runs"]:
        cells = []
        for k in rep["cross_sections_barn"]:
            c = r["kinds"][k]
            b = "-" if c["barn"] is None else f"{c['barn']:.0f}"
            lo, hi = c["barn_ci95"]
            cells.append(f"{c['count']:3d}, {b:>4} [{(lo or 0):5.1f}, {(hi or float('nan')):6.1f}] "
                         f"{'ok' if c['covers'] else 'MISS'}")
        lines.append(f"{r['seed']:>6} | " + " | ".join(cells))
    for k, p in rep.get("pooled", {}).items():
        lines.append(f"pooled {k}: {p['count']} found ({p['true_events']} simulated), {p['barn']:.1f} barn "
                     f"[{p['barn_ci95'][0]:.1f}, {p['barn_ci95'][1]:.1f}] (true {rep['cross_sections_barn'][k]:g})")
    lines.append("covered: " + ", ".join(f"{k} {n}/{rep['of']}" for k, n in rep["covered"].items())
                 + (f"; seeds skipped (dopants cannot be placed): {rep['skipped_seeds']}" if rep["skipped_seeds"] else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.dose_rates", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20, help="held-out seeds (default %(default)s)")
    p.add_argument("--first-seed", type=int, default=FIRST_HELD_OUT_SEED)
    p.add_argument("--frames", type=int, default=150, help="frames per movie (default %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    a = p.parse_args(argv)
    if a.seeds < 1 or a.frames < 10:
        print("lab.dose_rates: need --seeds >= 1 and --frames >= 10", file=sys.stderr)
        return 2
    rep = validate(a.seeds, a.first_seed, a.frames, progress=lambda r: print(
        f"seed {r['seed']}: " + ", ".join(f"{k} {v['count']} ({'ok' if v['covers'] else 'MISS'})"
                                          for k, v in r["kinds"].items()), file=sys.stderr, flush=True))
    print(format_table(rep))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rep, fh, indent=2)
    need = int(np.ceil(0.9 * a.seeds))
    return 0 if all(n >= need for n in rep["covered"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
