"""Event-confidence calibration on simulated movies (laboratory code, issue 13 criterion 6).

Runs short simulated movies (:func:`lab.alarm_eval.movie_spec`: three dopants, a scripted cycle of
every transformation kind every 6 frames, a flicker, a one-frame glitch every 6 frames (dose dip /
scan tear), drift 0.5-2 A/frame; HAADF and MAADF contrast, every second round random imaging) at
3e3-1e5 e/A^2 (most where events start to go wrong), through
the Pipeline (the shipped network on ONNX Runtime) with ``events.calibrate_confidence`` off, and
records for every reported event the inputs of :func:`engine.health.confidence.features` (raw
confidence, the event atom's confidence, the frame's SNR, the non-ok fraction of the last n frames).
Each event is scored right or wrong by the one event scorer (:func:`lab.eventscore.score_events`:
right = it finds a truth event of its kind; reports the scorer counts apart -- field bookkeeping, a
new motif on a truth defect -- are not scored and not used).

``--collect cal|heldout`` simulates and scores the movies of the calibration seeds (from
:data:`CAL_SEED`) or the held-out seeds (from :data:`HELDOUT_SEED`), appending each movie's rows to a
JSONL file (a stopped run resumes). ``--fit`` fits the logistic model (Newton, small ridge) on the
calibration rows; the reliability table and the expected calibration error (ECE) are computed on the
held-out rows, never used in the fit::

    PYTHONPATH=$PWD python -m lab.event_calibration --collect cal --movies 10
    PYTHONPATH=$PWD python -m lab.event_calibration --collect heldout --movies 10
    PYTHONPATH=$PWD python -m lab.event_calibration --fit --plot docs/event_reliability.png

(a second process can share a collection: ``--movies 20 --skip 60`` takes the plan's next 60 movies). A
seed whose dopants do not fit in the field gives no movie (no rows).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

CAL_SEED = 710_000          # calibration movies (the fit)
HELDOUT_SEED = 904_170      # held-out movies (the reported ECE); both apart from lab.alarm_eval's 915000+
DOSES = (3e3, 5e3, 1e4, 2e4, 3e4, 1e5)
CONTRASTS = ("HAADF", "MAADF")
DRIFTS_A = (0.5, 1.0, 2.0)


def movie_rows(seed: int, dose: float, contrast: str, drift_A: float, n_frames: int = 30, cfg=None,
               random_imaging: bool = False) -> list[dict]:
    """Every reported event of one simulated movie: its features and whether the scorer found it right
    (``random_imaging``: imaging drawn over the simulator's full ranges -- focus, probe, scan noise --
    at this dose, instead of the well-tuned HAADF/MAADF)."""
    from engine.health.confidence import event_atom_confidence
    from engine.pipeline import Pipeline
    from engine.sim.movie import run_movie
    from lab.alarm_eval import movie_spec
    from lab.evaluate import as_truth
    from lab.eventscore import TruthEvents, score_events
    from stemwatch.config import Config
    from streamer.frame import Frame

    spec = movie_spec(contrast, float(dose), int(seed), n_frames, float(drift_A))
    if random_imaging:
        spec = dataclasses.replace(spec, imaging="random", dose_e_per_A2=float(dose))
    try:
        imgs, gt = run_movie(spec)
    except ValueError:                  # the dopants did not fit in the field with this seed: no movie
        return []
    cfg = (cfg or Config().replace(inference={"backend": "onnx"})).replace(events={"calibrate_confidence": False})
    reports, feats = [], []
    with Pipeline(cfg) as pipe:
        for i, im in enumerate(imgs):
            r = pipe.process(Frame(im, "m", i, spec.frame_time_s * i, spec.pixel_size_A))
            if not r.events:
                continue
            ac = event_atom_confidence(r.events, r.chemistry.atoms, r.track_ids)
            snr = float(r.health.snr) if r.health is not None else float("nan")
            for e, a in zip(r.events, ac):
                d = e.to_dict()
                reports.append(d)
                feats.append({"kind": e.kind, "raw": float(e.confidence), "atom_conf": float(a), "snr": snr,
                              "bad": float(pipe.bad_fraction), "frame": int(e.frame)})
    te = TruthEvents.from_truth(as_truth(gt))
    m = score_events(te, reports, range(len(imgs)))
    false_ids = {id(h) for h in m.false}
    scored = {id(h) for h in m.scored}
    rows = []
    for d, f in zip(reports, feats):
        if id(d) not in scored:
            continue
        rows.append({**f, "right": id(d) not in false_ids, "seed": int(seed), "dose": float(dose),
                     "contrast": "random" if random_imaging else contrast, "drift_A": float(drift_A)})
    return rows


def movie_plan(seed0: int, movies: int, doses=DOSES) -> list[tuple]:
    """``movies`` movies per dose as (seed, dose, contrast, drift, random imaging), doses interleaved (a
    partial run still covers every dose); seeds ``seed0 + i``; contrast and drift alternate, and every
    second round of doses has random imaging."""
    plan, i = [], 0
    for _ in range(int(movies)):
        for dose in doses:
            plan.append((seed0 + i, float(dose), CONTRASTS[i % len(CONTRASTS)], DRIFTS_A[i % len(DRIFTS_A)],
                         bool((i // len(doses)) % 2)))
            i += 1
    return plan


def collect(seed0: int, movies: int, doses=DOSES, n_frames: int = 30, jsonl=None, progress=None,
            skip: int = 0) -> list[dict]:
    """Scored events of the movies of :func:`movie_plan`; with ``jsonl``, each movie's rows are appended
    to that file as it finishes (movies already in it are skipped: a stopped run resumes). ``skip``:
    leave out the plan's first movies (a second process can share the work)."""
    done = set()
    if jsonl is not None and Path(jsonl).exists():
        done = {json.loads(line)["movie"] for line in Path(jsonl).read_text().splitlines() if line.strip()}
    rows = []
    for seed, dose, contrast, drift, rnd in movie_plan(seed0, movies, doses)[int(skip):]:
        if seed in done:
            continue
        got = movie_rows(seed, dose, contrast, drift, n_frames, random_imaging=rnd)
        rows += got
        if jsonl is not None:
            with open(jsonl, "a") as f:
                f.write(json.dumps({"movie": seed, "rows": got}) + "\n")
        if progress:
            progress(f"seed {seed} dose {dose:.0e} {'random imaging' if rnd else contrast} drift {drift}: "
                     f"{len(got)} events, "
                     f"{sum(r['right'] for r in got)} right")
    return rows


def read_rows(jsonl) -> list[dict]:
    """Every row of a :func:`collect` JSONL file."""
    return [r for line in Path(jsonl).read_text().splitlines() if line.strip() for r in json.loads(line)["rows"]]


def design(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    from engine.health.confidence import features

    X = features([r["raw"] for r in rows], np.array([r["atom_conf"] for r in rows], float),
                 np.array([r["snr"] for r in rows], float), np.array([r["bad"] for r in rows], float))
    return X, np.array([bool(r["right"]) for r in rows], np.float64)


#: Sign constraints of the fit (monotone confidence): more window support, a surer atom and a higher
#: SNR never lower the confidence, more non-ok frames in the window never raise it; 0 = free.
SIGNS = {"logit_raw": 1, "atom_confidence": 1, "log_snr": 1, "bad_window": -1}


def fit(rows: list[dict], ridge: float = 1.0, iters: int = 60) -> tuple:
    """Logistic regression (Newton; L2 ``ridge`` on all but the intercept) of ``right`` on the features,
    with the signs of :data:`SIGNS`: a coefficient that comes out with the wrong sign is fixed at 0 and
    the rest refitted (so the confidence is monotone in its inputs)."""
    from engine.health.confidence import FEATURES

    X, y = design(rows)
    free = np.ones(X.shape[1], bool)
    sign = np.array([SIGNS.get(f, 0) for f in FEATURES])
    while True:
        w = np.zeros(X.shape[1])
        Xf = X[:, free]
        R = ridge * np.eye(Xf.shape[1])
        if free[0]:
            R[0, 0] = 0.0
        v = np.zeros(Xf.shape[1])
        for _ in range(iters):
            p = 1.0 / (1.0 + np.exp(-(Xf @ v)))
            g = Xf.T @ (p - y) + R @ v
            H = (Xf * (p * (1 - p))[:, None]).T @ Xf + R + 1e-9 * np.eye(len(v))
            v = v - np.linalg.solve(H, g)
        w[free] = v
        wrong = free & (sign * w < 0)
        if not wrong.any():
            return tuple(round(float(c), 4) for c in w)
        free &= ~wrong


def reliability(conf, right, bins: int = 10) -> tuple[list[dict], float]:
    from lab.health.evaluate import reliability as rel

    return rel(np.asarray(conf, float), np.asarray(right, float), bins)


def evaluate(rows: list[dict], coef=None) -> dict:
    """Raw and calibrated reliability of ``rows`` (held-out)."""
    from engine.health.confidence import COEF, calibrated

    coef = COEF if coef is None else coef
    right = np.array([bool(r["right"]) for r in rows], float)
    raw = np.array([r["raw"] for r in rows], float)
    cal = calibrated(raw, np.array([r["atom_conf"] for r in rows], float), np.array([r["snr"] for r in rows], float),
                     np.array([r["bad"] for r in rows], float), coef=coef)
    out = {"events": len(rows), "right": int(right.sum())}
    for name, c in (("raw", raw), ("calibrated", cal)):
        table, ece = reliability(c, right)
        out[name] = {"ece": ece, "table": table, "distinct": int(len(np.unique(np.round(c, 3))))}
    return out


def format_table(ev: dict, which: str = "calibrated") -> str:
    lines = ["| confidence | events | mean confidence | fraction right |", "|---|---|---|---|"]
    for t in ev[which]["table"]:
        lines.append(f"| {t['lo']:.1f}-{t['hi']:.1f} | {t['n']} | {t['conf']:.3f} | {t['acc']:.3f} |")
    return "\n".join(lines)


def plot(ev: dict, path: str, size: int = 420) -> None:
    """The held-out reliability diagram as a PNG (Pillow, the ``gallery`` extra): per confidence bin
    the fraction of events right against the mean confidence, raw (squares) and calibrated (discs,
    area ~ events), and the diagonal of perfect calibration."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    m0, m1 = 48, 16                                        # left/bottom and top/right margins (px)
    span = size - m0 - m1

    def xy(c, a):
        return m0 + c * span, size - m0 - a * span

    d.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    for t in np.linspace(0, 1, 6):
        d.line([xy(t, 0), (xy(t, 0)[0], xy(t, 0)[1] + 4)], fill="black")
        d.text((xy(t, 0)[0] - 8, xy(t, 0)[1] + 6), f"{t:.1f}", fill="black")
        d.line([xy(0, t), (xy(0, t)[0] - 4, xy(0, t)[1])], fill="black")
        d.text((4, xy(0, t)[1] - 6), f"{t:.1f}", fill="black")
    d.line([xy(0, 0), xy(1, 1)], fill=(150, 150, 150))
    n_max = max(t["n"] for t in ev["calibrated"]["table"])
    for t in ev["raw"]["table"]:
        x, y = xy(t["conf"], t["acc"])
        d.rectangle([x - 4, y - 4, x + 4, y + 4], outline=(200, 90, 0))
    pts = [xy(t["conf"], t["acc"]) for t in ev["calibrated"]["table"]]
    if len(pts) > 1:
        d.line(pts, fill=(0, 90, 200))
    for t, (x, y) in zip(ev["calibrated"]["table"], pts):
        r = 3 + 7 * np.sqrt(t["n"] / n_max)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(0, 90, 200))
    d.text((m0 + 6, m1 + 4), f"held-out events: {ev['events']} ({ev['right']} right)", fill="black")
    d.text((m0 + 6, m1 + 18), f"calibrated (discs) ECE {ev['calibrated']['ece']:.3f}", fill=(0, 90, 200))
    d.text((m0 + 6, m1 + 32), f"raw (squares) ECE {ev['raw']['ece']:.3f}", fill=(200, 90, 0))
    d.text((size // 2 - 70, size - 18), "event confidence (bin mean)", fill="black")
    d.text((m0 + 6, size - m0 - 16), "y: fraction of events right", fill="black")
    img.save(path)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m lab.event_calibration", description=__doc__.splitlines()[0])
    p.add_argument("--collect", choices=("cal", "heldout"), help="simulate, analyse and score movies of these "
                   "seeds, appending to --cal / --heldout (resumes where a stopped run left off)")
    p.add_argument("--movies", type=int, default=10, help="rounds of movies (one per dose) to collect")
    p.add_argument("--frames", type=int, default=30, help="frames per movie")
    p.add_argument("--skip", type=int, default=0, help="leave out the first movies of the plan (to share the "
                                                      "collection between processes)")
    p.add_argument("--cal", default="runs/evcal_cal.jsonl", help="calibration rows (JSONL)")
    p.add_argument("--heldout", default="runs/evcal_heldout.jsonl", help="held-out rows (JSONL)")
    p.add_argument("--fit", action="store_true", help="fit the coefficients on --cal and print them")
    p.add_argument("--plot", default=None, help="write the held-out reliability diagram (PNG) here")
    a = p.parse_args(argv)
    if a.collect:
        path = Path(a.cal if a.collect == "cal" else a.heldout)
        path.parent.mkdir(parents=True, exist_ok=True)
        collect(CAL_SEED if a.collect == "cal" else HELDOUT_SEED, a.movies, n_frames=a.frames, jsonl=path,
                progress=lambda s: print(s, file=sys.stderr, flush=True), skip=a.skip)
        return 0
    for f in ([a.cal] if a.fit else []) + [a.heldout]:
        if not Path(f).exists():
            print(f"no rows in {f}: collect them first (--collect)", file=sys.stderr)
            return 2
    coef = None
    if a.fit:
        cal = read_rows(a.cal)
        coef = fit(cal)
        print(f"calibration: {len(cal)} events, {sum(r['right'] for r in cal)} right")
        print("COEF =", coef)
    ev = evaluate(read_rows(a.heldout), coef)
    print(f"held-out: {ev['events']} events, {ev['right']} right; raw ECE {ev['raw']['ece']:.3f}, "
          f"calibrated ECE {ev['calibrated']['ece']:.3f}")
    print(format_table(ev, "calibrated"))
    if a.plot:
        plot(ev, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
