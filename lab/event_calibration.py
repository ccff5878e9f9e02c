"""Event-confidence calibration on simulated movies (laboratory code, issue 13 criterion 6).

Runs short simulated movies (:func:`lab.alarm_eval.movie_spec`: three dopants, a scripted cycle of
every transformation kind every 6 frames, a flicker, a one-frame glitch every 6 frames (dose dip /
scan tear), drift 0.5-2 A/frame; HAADF and MAADF contrast, every second round random imaging) at
3e3-1e5 e/A^2 (most where events start to go wrong), through
the Pipeline (the shipped network on ONNX Runtime) with ``events.calibrate_confidence`` off, and
records for every reported event the inputs of :func:`engine.health.confidence.features` (raw
confidence, the event atom's confidence, the frame's SNR, the non-ok fraction of the last n frames, the
transformation events raised in the last n frames).
Each event is scored right or wrong by the one event scorer (:func:`lab.eventscore.score_events`:
right = it finds a truth event of its kind; reports the scorer counts apart -- field bookkeeping, a
new motif on a truth defect -- are not scored and not used).

``--collect cal|heldout`` simulates and scores the movies of the calibration seeds (from
:data:`CAL_SEED`) or the held-out seeds (from :data:`HELDOUT_SEED`), appending each movie's rows to a
JSONL file (a stopped run resumes). ``--fit`` fits the model on the calibration rows: the linear score
(logistic regression, sign-constrained, small ridge) and the monotone curve from score to probability
(isotonic regression, at least :data:`MIN_BLOCK` events per knot), and prints the expected calibration
error (ECE) of a grouped cross-validation on the calibration movies (10 folds of whole movies: every
event is predicted by a model fitted without its movie); ``--write`` puts the fitted values into
engine/health/confidence.py. The reliability table and the ECE reported are then computed on the
held-out rows, never used in the fit (ECE: 10 equal-width confidence bins, the count-weighted mean of
|mean confidence - fraction right|; also printed: 15 bins, 10 equal-mass bins, and the ECE a perfectly
calibrated confidence would show on as many events)::

    PYTHONPATH=$PWD python -m lab.event_calibration --collect cal --movies 47
    PYTHONPATH=$PWD python -m lab.event_calibration --collect heldout --movies 80
    PYTHONPATH=$PWD python -m lab.event_calibration --fit --write --plot docs/event_reliability.png

(a second process can share a collection: ``--movies 20 --skip 60`` takes the plan's next 60 movies). A
seed whose dopants do not fit in the field gives no movie (no rows). The rows of the shipped fit (281
calibration movies: ``--movies 47`` stopped after 281; 480 held-out movies) are kept gzip-compressed in
lab/data/event_calibration/: ``--fit --cal lab/data/event_calibration/cal.jsonl.gz --heldout
lab/data/event_calibration/heldout.jsonl.gz`` repeats the fit and the held-out table without simulating.
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
    per_frame = []                      # transformation events raised per frame
    with Pipeline(cfg) as pipe:
        for i, im in enumerate(imgs):
            r = pipe.process(Frame(im, "m", i, spec.frame_time_s * i, spec.pixel_size_A))
            per_frame.append(sum(e.category != "bookkeeping" for e in r.events))
            if not r.events:
                continue
            ac = event_atom_confidence(r.events, r.chemistry.atoms, r.track_ids)
            snr = float(r.health.snr) if r.health is not None else float("nan")
            for e, a in zip(r.events, ac):
                d = e.to_dict()
                reports.append(d)
                feats.append({"kind": e.kind, "raw": float(e.confidence), "atom_conf": float(a), "snr": snr,
                              "bad": float(pipe.bad_fraction), "frame": int(e.frame),
                              "before": str(e.before), "after": str(e.after), "category": e.category,
                              "n_atoms": int(len(r.chemistry.atoms)),
                              "frame_events": int(per_frame[-1]),
                              "window_events": int(pipe.window_events)})
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
        done = {m["movie"] for m in _movies(jsonl)}
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


def _movies(jsonl) -> list[dict]:
    """The per-movie records of a :func:`collect` JSONL file (plain, or gzip-compressed: ``.gz``)."""
    import gzip

    text = gzip.decompress(Path(jsonl).read_bytes()).decode() if str(jsonl).endswith(".gz") else \
        Path(jsonl).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_rows(jsonl) -> list[dict]:
    """Every row of a :func:`collect` JSONL file (plain, or gzip-compressed: ``.gz``)."""
    return [r for m in _movies(jsonl) for r in m["rows"]]


def _inputs(rows: list[dict]) -> tuple:
    """The inputs of :func:`engine.health.confidence.calibrated` for ``rows`` (a row without
    ``window_events``, collected before that input existed, counts its own event only)."""
    return ([r["raw"] for r in rows], np.array([r["atom_conf"] for r in rows], float),
            np.array([r["snr"] for r in rows], float), np.array([r["bad"] for r in rows], float),
            np.array([r.get("window_events", 1) for r in rows], float))


def design(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    from engine.health.confidence import features

    return features(*_inputs(rows)), np.array([bool(r["right"]) for r in rows], np.float64)


#: Sign constraints of the fit (monotone confidence): more window support, a surer atom and a higher
#: SNR never lower the confidence, more non-ok frames or more events in the window never raise it;
#: 0 = free.
SIGNS = {"logit_raw": 1, "atom_confidence": 1, "log_snr": 1, "bad_window": -1, "log_window_events": -1}
#: L2 penalty of the linear score's fit (all but the intercept). Chosen, with :data:`MIN_BLOCK` and the
#: curve, by grouped 10-fold cross-validation on the calibration movies alone (1,190 events of 281
#: movies, 4 fold splits): ridge 0.03/0.1/0.3/1 gave ECE 0.014/0.012/0.013/0.011 and log-loss
#: 0.203/0.202/0.203/0.207 with the curve (min block 20); a logistic curve instead 0.016/0.017/0.020/
#: 0.025; without the window-events input 0.023-0.030.
RIDGE = 0.1
#: The smallest number of calibration events behind one point of the score -> probability curve
#: (1, 10, 20, 40 gave cross-validated ECE 0.013, 0.012, 0.012, 0.013 at ridge 0.1).
MIN_BLOCK = 20


def fit(rows: list[dict], ridge: float = RIDGE, iters: int = 60) -> tuple:
    """The linear score: logistic regression (Newton; L2 ``ridge`` on all but the intercept) of
    ``right`` on the features, with the signs of :data:`SIGNS`: a coefficient that comes out with the
    wrong sign is fixed at 0 and the rest refitted (so the confidence is monotone in its inputs)."""
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


def fit_curve(z, right, min_block: int = MIN_BLOCK) -> tuple[tuple, tuple]:
    """The monotone map from the linear score ``z`` to the probability of being right: isotonic
    regression (pool adjacent violators) of ``right`` on ``z``, blocks smaller than ``min_block``
    events merged into a neighbour, each block's fraction right shrunk as (k + 1/2) / (n + 1) (never a
    bare 0 or 1). Returns the knots ``(z, p)``: each block's mean score and probability, for
    ``np.interp`` (linear between blocks, flat beyond the ends)."""
    z = np.asarray(z, np.float64)
    y = np.asarray(right, np.float64)
    o = np.argsort(z, kind="stable")
    z, y = z[o], y[o]
    blocks = []                                     # [sum z, sum y, n]
    for zi, yi in zip(z, y):                        # pool adjacent violators (lab code: runs once per fit)
        blocks.append([zi, yi, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            zb, yb, nb = blocks.pop()
            blocks[-1][0] += zb
            blocks[-1][1] += yb
            blocks[-1][2] += nb
    while len(blocks) > 1 and min(b[2] for b in blocks) < min_block:
        i = int(np.argmin([b[2] for b in blocks]))
        if i == 0:
            j = 1
        elif i == len(blocks) - 1:
            j = i - 1
        else:                                       # the neighbour whose rate is closer
            r = blocks[i][1] / blocks[i][2]
            j = i - 1 if abs(blocks[i - 1][1] / blocks[i - 1][2] - r) <= abs(blocks[i + 1][1] / blocks[i + 1][2] - r) \
                else i + 1
        lo, hi = min(i, j), max(i, j)
        blocks[lo] = [blocks[lo][k] + blocks[hi][k] for k in range(3)]
        del blocks[hi]
    kz = np.array([b[0] / b[2] for b in blocks])
    kp = np.maximum.accumulate(np.array([(b[1] + 0.5) / (b[2] + 1.0) for b in blocks]))
    return tuple(round(float(v), 4) for v in kz), tuple(round(float(v), 4) for v in kp)


def fit_model(rows: list[dict], ridge: float = RIDGE, min_block: int = MIN_BLOCK) -> tuple:
    """``(coef, (map_z, map_p))``: the linear score and its probability curve, both fitted on ``rows``."""
    coef = fit(rows, ridge)
    X, y = design(rows)
    return coef, fit_curve(X @ np.asarray(coef), y, min_block)


def predict(rows: list[dict], model: tuple) -> np.ndarray:
    """Calibrated confidence of ``rows`` under ``model`` (from :func:`fit_model`)."""
    from engine.health.confidence import calibrated

    coef, curve = model
    return calibrated(*_inputs(rows), coef=coef, curve=curve)


def grouped_cv(rows: list[dict], folds: int = 10, seed: int = 0, **kw) -> np.ndarray:
    """Out-of-fold calibrated confidence of every row: the movies are split into ``folds`` groups (all
    events of a movie in one group: wrong events come in bursts within a movie), and each group is
    predicted by the model fitted on the others."""
    movies = np.array([r["seed"] for r in rows])
    u = np.unique(movies)
    np.random.default_rng(seed).shuffle(u)
    fold = dict(zip(u.tolist(), np.arange(len(u)) % folds))
    f = np.array([fold[m] for m in movies.tolist()])
    out = np.zeros(len(rows))
    for i in range(folds):
        tr, te = np.flatnonzero(f != i), np.flatnonzero(f == i)
        if len(te):
            out[te] = predict([rows[j] for j in te], fit_model([rows[j] for j in tr], **kw))
    return out


def reliability(conf, right, bins: int = 10) -> tuple[list[dict], float]:
    """Reliability rows and expected calibration error, the criterion's definition (the one used for
    the per-atom confidence too, :func:`lab.health.evaluate.reliability`): ``bins`` equal-width
    confidence bins [0, 0.1), [0.1, 0.2), ... [0.9, 1.0]; ECE = sum over bins of (events in the bin /
    all events) x |mean confidence - fraction right|."""
    from lab.health.evaluate import reliability as rel

    return rel(np.asarray(conf, float), np.asarray(right, float), bins)


def ece_equal_mass(conf, right, bins: int = 10) -> float:
    """ECE over ``bins`` bins of (nearly) equal event counts (sorted by confidence), a check that the
    figure does not hang on the bin edges."""
    conf, right = np.asarray(conf, float), np.asarray(right, float)
    parts = np.array_split(np.argsort(conf, kind="stable"), bins)
    return float(sum(len(p) / len(conf) * abs(conf[p].mean() - right[p].mean()) for p in parts if len(p)))


def ece_floor(conf, bins: int = 10, draws: int = 400, seed: int = 0) -> float:
    """The ECE a perfectly calibrated confidence would still show on this many events (the mean over
    ``draws`` of the ECE when each event is right with probability its confidence): the sampling noise
    under any measured figure."""
    conf = np.asarray(conf, float)
    rng = np.random.default_rng(seed)
    return float(np.mean([reliability(conf, rng.random(len(conf)) < conf, bins)[1] for _ in range(draws)]))


def scores(conf, right) -> dict:
    """ECE (10 and 15 equal-width bins, 10 equal-mass bins), its sampling floor, and the table."""
    conf, right = np.asarray(conf, float), np.asarray(right, float)
    table, ece = reliability(conf, right)
    return {"ece": ece, "ece15": reliability(conf, right, 15)[1], "ece_mass": ece_equal_mass(conf, right),
            "floor": ece_floor(conf), "table": table, "distinct": int(len(np.unique(np.round(conf, 3))))}


def evaluate(rows: list[dict], model=None) -> dict:
    """Raw and calibrated reliability of ``rows`` (held-out); ``model`` from :func:`fit_model`, default
    the shipped one."""
    from engine.health.confidence import calibrated

    right = np.array([bool(r["right"]) for r in rows], float)
    raw = np.array([r["raw"] for r in rows], float)
    cal = calibrated(*_inputs(rows)) if model is None else predict(rows, model)
    out = {"events": len(rows), "right": int(right.sum()), "movies": len({r["seed"] for r in rows})}
    for name, c in (("raw", raw), ("calibrated", cal)):
        out[name] = scores(c, right)
    return out


def format_table(ev: dict, which: str = "calibrated") -> str:
    lines = ["| confidence | events | mean confidence | fraction right |", "|---|---|---|---|"]
    for t in ev[which]["table"]:
        lines.append(f"| {t['lo']:.1f}-{t['hi']:.1f} | {t['n']:,} | {t['conf']:.3f} | {t['acc']:.3f} |")
    return "\n".join(lines)


def write_model(model: tuple, note: str, path=None) -> None:
    """Rewrite the fitted block of engine/health/confidence.py (between its marker comments)."""
    import re
    import textwrap

    path = Path(path or Path(__file__).resolve().parent.parent / "engine" / "health" / "confidence.py")
    coef, (kz, kp) = model
    text = path.read_text()
    start = "# --- fitted by `python -m lab.event_calibration --fit --write` (do not edit by hand) ---\n"
    end = "# --- end of fitted values ---\n"
    body = (f"#: Coefficients of the linear score, one per :data:`FEATURES`.\nCOEF = {tuple(coef)!r}\n"
            f"#: The score -> probability curve (knots for ``np.interp``; flat beyond the ends).\n"
            f"MAP_Z = {tuple(kz)!r}\nMAP_P = {tuple(kp)!r}\n#: What the values were fitted on.\nFIT_NOTE = (\n"
            + "".join(f"    {line!r}\n" for line in textwrap.wrap(note, 96, drop_whitespace=False)) + ")\n")
    i, j = text.index(start) + len(start), text.index(end)
    new = text[:i] + body + text[j:]
    path.write_text(re.sub(r"[ \t]+\n", "\n", new))


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
    d.text((m0 + 6, m1 + 4), f"held-out: {ev['events']} events of {ev.get('movies', '?')} movies, {ev['right']} right",
           fill="black")
    d.text((m0 + 6, m1 + 18), f"calibrated (discs) ECE {ev['calibrated']['ece']:.3f}", fill=(0, 90, 200))
    d.text((m0 + 6, m1 + 32), f"raw (squares) ECE {ev['raw']['ece']:.3f}", fill=(200, 90, 0))
    d.text((size // 2 - 70, size - 18), "event confidence (bin mean)", fill="black")
    d.text((m0 + 6, size - m0 - 16), "y: fraction of events right", fill="black")
    img.save(path)


def _print_scores(label: str, ev_cal: dict, n: int, right: int, movies: int) -> None:
    print(f"{label}: {n:,} events of {movies} movies, {right:,} right; ECE {ev_cal['ece']:.3f} (10 equal-width "
          f"bins; 15 bins {ev_cal['ece15']:.3f}, 10 equal-mass bins {ev_cal['ece_mass']:.3f}; a perfectly "
          f"calibrated confidence would show {ev_cal['floor']:.3f} on these events)")


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
    p.add_argument("--fit", action="store_true", help="fit the model on --cal, print it and its grouped "
                   "cross-validated ECE on the calibration movies")
    p.add_argument("--write", action="store_true", help="with --fit: write the fitted values into "
                   "engine/health/confidence.py")
    p.add_argument("--folds", type=int, default=10, help="folds (groups of movies) of the cross-validation")
    p.add_argument("--plot", default=None, help="write the held-out reliability diagram (PNG) here")
    a = p.parse_args(argv)
    if a.collect:
        path = Path(a.cal if a.collect == "cal" else a.heldout)
        if path.suffix == ".gz":
            print(f"{path}: collect into a plain .jsonl file (gzip it when done)", file=sys.stderr)
            return 2
        path.parent.mkdir(parents=True, exist_ok=True)
        collect(CAL_SEED if a.collect == "cal" else HELDOUT_SEED, a.movies, n_frames=a.frames, jsonl=path,
                progress=lambda s: print(s, file=sys.stderr, flush=True), skip=a.skip)
        return 0
    if a.write and not a.fit:
        print("--write needs --fit", file=sys.stderr)
        return 2
    model = None
    if a.fit:
        if not Path(a.cal).exists():
            print(f"no rows in {a.cal}: collect them first (--collect cal)", file=sys.stderr)
            return 2
        cal = read_rows(a.cal)
        model = fit_model(cal)
        y = np.array([bool(r["right"]) for r in cal], float)
        cv = scores(grouped_cv(cal, a.folds), y)
        n_mov = len({r["seed"] for r in cal})
        print("COEF =", model[0])
        print("MAP_Z =", model[1][0])
        print("MAP_P =", model[1][1])
        _print_scores(f"calibration, grouped {a.folds}-fold cross-validation", cv, len(cal), int(y.sum()), n_mov)
        print(format_table({"calibrated": cv}))
        if a.write:
            seeds = sorted({r["seed"] for r in cal})
            write_model(model, f"{len(cal)} events ({int(y.sum())} right) of {n_mov} calibration movies with "
                               f"events (seeds {seeds[0]}-{seeds[-1]}); grouped {a.folds}-fold cross-validated "
                               f"ECE {cv['ece']:.3f}")
            print("written to engine/health/confidence.py")
    if not Path(a.heldout).exists():
        if a.fit:
            return 0
        print(f"no rows in {a.heldout}: collect them first (--collect heldout)", file=sys.stderr)
        return 2
    ev = evaluate(read_rows(a.heldout), model)
    _print_scores("held-out", ev["calibrated"], ev["events"], ev["right"], ev["movies"])
    print(f"raw confidence: ECE {ev['raw']['ece']:.3f}")
    print(format_table(ev, "calibrated"))
    if a.plot:
        plot(ev, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
