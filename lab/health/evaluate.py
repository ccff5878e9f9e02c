"""Evaluation of engine/health on simulated frames (laboratory code, not used at run time).

* :func:`snr_pairs` -- (estimated, true) C-atom SNR pairs: :func:`engine.health.atoms.estimate_snr` from
  the image and the network's atoms, against :meth:`engine.sim.imaging.ImagingParams.atom_snr`;
* :func:`snr_agreement` -- per dose, the fraction of held-out frames on the same side of 2;
* :func:`calibrate` -- the factor ``SNR_SCALE`` (median true/estimated ratio) on calibration seeds.

``python -m lab.health.evaluate [--calibrate] [--frames N]`` prints the tables of docs/model.md.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

CALIBRATION_SEED = 4242
DOSES = (1e3, 1e4, 1e5, 1e6)
PIXEL_SIZES_A = (0.05, 0.076, 0.1, 0.2)


def _frames_cal(dose, px, frames, seed):
    from engine.sim import make_training_example

    rng = np.random.default_rng(np.random.SeedSequence([seed, int(np.log10(dose) * 10), int(px * 1000)]))
    n = int(round(25.6 / px))
    for _ in range(frames):
        ex = make_training_example(rng, shape_px=(n, n), pixel_size_A=px, dose_range=(dose, dose),
                                   si_per_nm2=1.0, adatoms=False, contamination=False)
        yield ex.image, px, ex.params


def _frames_heldout(dose, px, frames):
    from lab.infer.heldout import cell_frames

    for image, _xy, _sp, fpx, _ign, params in cell_frames(dose, px, "plain", frames, with_params=True):
        yield image, fpx, params


def snr_pairs(inferencer, doses=DOSES, pixel_sizes=PIXEL_SIZES_A, frames=4, heldout=True,
              seed=CALIBRATION_SEED) -> list[dict]:
    """Rows ``{"dose", "pixel_size_A", "estimated", "true"}`` (estimated with SNR_SCALE applied)."""
    import engine.chem as chem
    from engine.health.atoms import estimate_snr
    from engine.sim.imaging import ImagingParams
    from stemwatch.config import ChemistryConfig

    cc = ChemistryConfig()
    rows = []
    for dose in doses:
        for px in pixel_sizes:
            it = _frames_heldout(dose, px, frames) if heldout else _frames_cal(dose, px, frames, seed)
            for image, fpx, params in it:
                probs = inferencer.predict(image, fpx)
                c = chem.analyze(probs, cc, image=image)
                est = estimate_snr(image, c)
                true = ImagingParams.from_dict(params["imaging"]).atom_snr(fpx)
                rows.append({"dose": dose, "pixel_size_A": px, "estimated": est, "true": true})
    return rows


def snr_agreement(rows: list[dict], limit: float = 2.0) -> list[dict]:
    """Per dose: frames, fraction on the same side of ``limit`` (an unmeasurable estimate counts as
    below), and the confusion counts."""
    out = []
    for dose in sorted({r["dose"] for r in rows}):
        rr = [r for r in rows if r["dose"] == dose]
        est_low = np.array([not (r["estimated"] >= limit) for r in rr])
        true_low = np.array([r["true"] < limit for r in rr])
        out.append({"dose": dose, "frames": len(rr), "agree": float((est_low == true_low).mean()),
                    "true_low": int(true_low.sum()), "est_low": int(est_low.sum()),
                    "low_as_ok": int((true_low & ~est_low).sum()), "ok_as_low": int((~true_low & est_low).sum())})
    return out


def calibrate(rows: list[dict]) -> float:
    """Factor that makes the estimates unbiased (median of true/estimated, in log) on SNR 0.5-20."""
    r = np.array([(x["true"], x["estimated"]) for x in rows if np.isfinite(x["estimated"]) and x["estimated"] > 0
                  and 0.5 <= x["true"] <= 20])
    return float(np.exp(np.median(np.log(r[:, 0] / r[:, 1])))) if len(r) else float("nan")


def format_agreement(table: list[dict]) -> str:
    lines = ["| dose (e/A^2) | frames | same side of 2 | true SNR < 2 | estimated < 2 | low read as ok | ok read as low |",
             "|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['dose']:.0e} | {t['frames']} | {100 * t['agree']:.0f} % | {t['true_low']} | {t['est_low']} | "
                     f"{t['low_as_ok']} | {t['ok_as_low']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from engine.infer import Inferencer
    from stemwatch.config import InferenceConfig

    p = argparse.ArgumentParser(prog="python -m lab.health.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--calibrate", action="store_true", help="fit SNR_SCALE on the calibration seed")
    p.add_argument("--frames", type=int, default=4, help="frames per dose x pixel-size cell")
    p.add_argument("--figures", action="store_true", help="the pixel-size table and the verdict confusion table")
    a = p.parse_args(argv)
    if a.figures:
        print(figures())
        return 0
    with Inferencer(InferenceConfig(backend="onnx")) as inf:
        if a.calibrate:
            rows = snr_pairs(inf, frames=a.frames, heldout=False)
            print(f"SNR_SCALE x {calibrate(rows):.3f}")
            for r in rows:
                print(f"{r['dose']:.0e} {r['pixel_size_A']} est {r['estimated']:.2f} true {r['true']:.2f}", file=sys.stderr)
        rows = snr_pairs(inf, frames=a.frames, heldout=True)
        print(format_agreement(snr_agreement(rows)))
    return 0



# ---------------------------------------------------------------------------------------------- accuracy
#: A predicted atom farther than this from every true atom (contamination included) sits in empty
#: space: lattice "filled in" by the network (holes, vacancies).
EMPTY_SPACE_A = 1.5


def frame_accuracy(inferencer, dose: float, pixel_sizes=(0.05, 0.1), frames: int = 12) -> list[dict]:
    """Per held-out frame (issue 4's plain cells): its detection Counts (network-level scoring, as
    lab.infer.heldout), the estimated and the true C-atom SNR, and the atoms put into empty space
    (> 1.5 A from every true atom): by the network (``empty_space`` of ``n_pred``, a simple peak
    finder on its maps) and in what the analyzer reports (``empty_space_reported`` of
    ``n_reported``: engine.chem's atoms, which must show contrast on the raw frame)."""
    from scipy.spatial import cKDTree

    import engine.chem as chem
    from engine.health.atoms import estimate_snr
    from lab.infer.evaluate import find_atoms_simple, score_frame
    from lab.infer.heldout import cell_frames
    from engine.sim.imaging import ImagingParams
    from stemwatch.config import ChemistryConfig

    cc = ChemistryConfig()
    rows = []
    for px in pixel_sizes:
        for image, xy, sp, fpx, ign, params in cell_frames(dose, px, "plain", frames, with_params=True):
            probs = inferencer.predict(image, fpx)
            pxy, psp = find_atoms_simple(probs)
            counts = score_frame(pxy, psp, xy, sp, image.shape, fpx, ignore_xy_px=ign)
            analysed = chem.analyze(probs, cc, image=image)
            est = estimate_snr(image, analysed)
            true = ImagingParams.from_dict(params["imaging"]).atom_snr(fpx)
            allxy = np.concatenate([xy, ign]) if len(ign) else xy
            tree = cKDTree(allxy * fpx)
            d, _ = tree.query(np.asarray(pxy).reshape(-1, 2) * fpx) if len(pxy) else (np.zeros(0), None)
            # what the analyzer reports: its atoms after the check against the raw frame's contrast
            axy = np.asarray(analysed.atoms.xy_px).reshape(-1, 2)
            da, _ = tree.query(axy * fpx) if len(axy) else (np.zeros(0), None)
            rows.append({"dose": dose, "pixel_size_A": px, "counts": counts, "snr_est": est, "snr_true": true,
                         "n_pred": int(len(pxy)), "empty_space": int((d > EMPTY_SPACE_A).sum()),
                         "n_reported": int(len(axy)), "empty_space_reported": int((da > EMPTY_SPACE_A).sum())})
    return rows


def pooled(rows: list[dict], key: str | None, limit: float = 2.0):
    """Counts pooled over the rows whose ``key`` SNR is >= limit (all rows when key is None)."""
    from lab.infer.evaluate import Counts

    c = Counts()
    n = 0
    for r in rows:
        if key is None or r[key] >= limit:
            c.add(r["counts"])
            n += 1
    return c, n


def format_accuracy(rows_by_dose: dict) -> str:
    lines = ["| dose (e/A^2) | frames | pooled over | frames kept | F1 | Si P | Si R | worst empty-space precision |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v != v else f"{v:.4f}"  # noqa: E731
    for dose, rows in rows_by_dose.items():
        worst = min((1.0 - r["empty_space"] / max(1, r["n_pred"]) for r in rows), default=float("nan"))
        for key, name in ((None, "all frames"), ("snr_est", "estimated SNR >= 2"), ("snr_true", "true SNR >= 2")):
            c, n = pooled(rows, key)
            s = c.summary()
            lines.append(f"| {dose:.0e} | {len(rows)} | {name} | {n} | {fmt(s['f1'])} | {fmt(s['si_precision'])} | "
                         f"{fmt(s['si_recall'])} | {fmt(worst) if key is None else ''} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- figures
HELDOUT_MOVIE_SEED = 90_417
FACTORS = (0.33, 0.5, 0.67, 1.0, 1.5, 2.0, 3.0)


def _pipeline_run(frames, declared, scale="auto", inject=None):
    from engine.pipeline import Pipeline
    from stemwatch.config import Config
    from streamer.frame import Frame

    cfg = Config().replace(inference={"backend": "onnx"}, health={"scale": scale})
    out = []
    with Pipeline(cfg) as pipe:
        for i, im in enumerate(frames):
            im = inject.get(i, im) if inject else im
            out.append(pipe.process(Frame(im, "heldout", i, 0.2 * i, declared)))
    return out


def heldout_movie(n_frames=12, shape=(256, 256), k=0):
    from engine.sim.movie import MovieSpec, run_movie

    for seed in range(HELDOUT_MOVIE_SEED + 100 * k, HELDOUT_MOVIE_SEED + 100 * k + 50):
        try:                                    # (a seed whose field has no room for both dopants: the next)
            return run_movie(MovieSpec(n_frames=n_frames, shape_px=shape, pixel_size_A=0.1, seed=seed,
                                       dopants=("si3", "si4"), drift_A_per_frame=(0.1, 0.05),
                                       events=[(5, "si_3_to_4", 0), (11, "si_4_to_3", 1), (16, "si_4_to_3", 0)]))
        except ValueError:
            continue
    raise RuntimeError("no held-out movie seed fits the dopants")


def pixel_size_table(n_frames=6) -> list[dict]:
    """Declared factor -> detection F1 and events on a held-out simulated movie (true 0.1 A/px), with
    --scale auto and --scale declared."""
    from lab.infer.evaluate import Counts, score_frame

    frames, truth = heldout_movie(n_frames)
    rows = []
    for f in FACTORS:
        row = {"factor": f}
        for scale in ("auto", "declared"):
            res = _pipeline_run(frames, 0.1 * f, scale)
            c = Counts()
            for r in res:
                t = truth.frame(r.seq)
                a = r.chemistry.atoms
                c.add(score_frame(a.xy_px, a.species, t.xy_px, t.species, r.frame_shape, r.pixel_size_A))
            row[scale] = {"f1": c.f1, "events": sum(len(r.events) for r in res),
                          "source": sorted({r.health.scale_source for r in res}),
                          "pixel_size_A": float(np.median([r.pixel_size_A for r in res]))}
        rows.append(row)
    return rows


def injected_frames(frames, rng) -> dict:
    """{index: (kind, image)}: bad frames injected into a movie (every 3rd frame from the 4th on)."""
    shape = frames[0].shape
    im = lambda i: frames[i].astype(np.float32)  # noqa: E731
    kinds = ["blank_dark", "blank_zero", "non_finite", "glitch_dose", "glitch_tear", "saturated", "fov_jump"]
    out = {}
    for j, kind in enumerate(kinds):
        i = 3 + 3 * j
        if i >= len(frames):
            break
        a = im(i)
        if kind == "blank_dark":
            a = np.float32(100) + rng.normal(0, 0.6, shape).astype(np.float32)
        elif kind == "blank_zero":
            a = np.zeros(shape, np.float32)
        elif kind == "non_finite":
            a = np.full(shape, np.nan, np.float32)
        elif kind == "glitch_dose":
            a = a * 0.4
        elif kind == "glitch_tear":
            a[shape[0] // 2:] += 4 * float(a.std())
        elif kind == "saturated":
            a = np.minimum(a, np.percentile(a, 90))
        elif kind == "fov_jump":
            a = np.roll(a, shape[1] // 2, axis=1)
        out[i] = (kind, a)
    return out


def verdict_confusion(n_frames=24, movies=3) -> dict:
    """Injected kind (or 'clean') -> Counter of verdicts over ``movies`` held-out movies; plus the events
    of each movie clean and with the injected frames."""
    from collections import Counter, defaultdict

    table = defaultdict(Counter)
    events = []
    for k in range(movies):
        frames, truth = heldout_movie(n_frames, k=k)
        inj = injected_frames(frames, np.random.default_rng(k))
        images = {i: a for i, (kind, a) in inj.items()}
        j = [i for i, (kind, _) in inj.items() if kind == "fov_jump"]
        if j:                                   # a stage jump moves every later frame too
            for i in range(j[0] + 1, len(frames)):
                images[i] = np.roll(frames[i], frames[0].shape[1] // 2, axis=1)
        res = _pipeline_run(frames, 0.1, inject=images)
        clean = _pipeline_run(frames, 0.1)
        for r in res:
            table[inj[r.seq][0] if r.seq in inj else "clean"][r.health.verdict] += 1
        events.append({"clean": [(e.frame, e.kind) for r in clean for e in r.events],
                       "injected": [(e.frame, e.kind) for r in res for e in r.events],
                       "truth": [(e["frame"], e["kind"]) for e in truth.events]})
    return {"table": {k: dict(v) for k, v in table.items()}, "events": events}


def figures() -> str:
    lines = ["pixel size (held-out movie, true 0.1 A/px): factor | auto: F1, events, source, A/px | declared: F1, events"]
    for r in pixel_size_table():
        a, d = r["auto"], r["declared"]
        lines.append(f"| x{r['factor']} | {a['f1']:.4f} | {a['events']} | {'/'.join(a['source'])} | {a['pixel_size_A']:.4f} | "
                     f"{d['f1']:.4f} | {d['events']} |")
    v = verdict_confusion()
    lines.append("verdicts: injected -> {verdict: frames}")
    for k, c in v["table"].items():
        lines.append(f"| {k} | {c} |")
    for e in v["events"]:
        lines.append(f"events: truth {e['truth']}; clean {e['clean']}; injected {e['injected']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())


# ---------------------------------------------------------------------------------------------- confidence
def atom_confidence_pairs(inferencer, doses=DOSES, pixel_sizes=(0.05, 0.1), frames=4, heldout=True,
                          seed=CALIBRATION_SEED, only_ok=True) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of every reported atom inside the scored area: correct = a true atom of the
    same species within 0.5 A. ``only_ok``: frames the analyzer keeps (estimated SNR >= 2)."""
    import engine.chem as chem
    from engine.health.atoms import drop_outside, estimate_snr
    from lab.match import match_mutual
    from stemwatch.config import ChemistryConfig

    cc = ChemistryConfig()
    conf, ok = [], []
    for dose in doses:
        for px in pixel_sizes:
            if heldout:
                from lab.infer.heldout import cell_frames

                it = ((im, xy, sp, fpx, ign) for im, xy, sp, fpx, ign in cell_frames(dose, px, "plain", frames))
            else:
                it = ((ex.image, ex.xy_px, ex.species, px, np.zeros((0, 2)))
                      for ex in _examples(dose, px, frames, seed))
            for image, xy, sp, fpx, ign in it:
                c = chem.analyze(inferencer.predict(image, fpx), cc, image=image)
                if only_ok and not estimate_snr(image, c) >= 2.0:
                    continue
                a = drop_outside(c.atoms, image.shape, 0.3)
                ip, it_ = match_mutual(a.xy_px * fpx, np.asarray(xy) * fpx, 0.5)
                good = np.zeros(len(a), bool)
                good[ip] = np.asarray(a.species)[ip] == np.asarray(sp)[it_]
                H, W = image.shape
                inner = ((a.xy_px >= 10) & (a.xy_px <= np.array([W, H]) - 11)).all(1)
                conf.append(np.asarray(a.confidence)[inner])
                ok.append(good[inner])
    return np.concatenate(conf), np.concatenate(ok)


def _examples(dose, px, frames, seed):
    from engine.sim import make_training_example

    rng = np.random.default_rng(np.random.SeedSequence([seed, int(np.log10(dose) * 10), int(px * 1000), 7]))
    n = int(round(25.6 / px))
    for _ in range(frames):
        yield make_training_example(rng, shape_px=(n, n), pixel_size_A=px, dose_range=(dose, dose), si_per_nm2=1.0,
                                    adatoms=False, contamination=False)


def reliability(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> tuple[list[dict], float]:
    """Reliability diagram rows (bin, count, mean confidence, fraction correct) and the expected
    calibration error (count-weighted mean |confidence - accuracy|)."""
    edges = np.linspace(0, 1, bins + 1)
    k = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = k == b
        if m.any():
            rows.append({"lo": edges[b], "hi": edges[b + 1], "n": int(m.sum()), "conf": float(conf[m].mean()),
                         "acc": float(correct[m].mean())})
            ece += m.sum() / len(conf) * abs(conf[m].mean() - correct[m].mean())
    return rows, float(ece)
