"""Event-confidence reliability on simulated movies (laboratory code, issue 13 criterion 6).

Movies with random events (``MovieSpec.event_rate_per_frame``) at several doses and imaging draws run
through the Pipeline; each reported event is right when the truth has an event of the same kind at
most ``max_latency`` frames earlier within 2 A of it (``new_motif`` and ``fov_jump`` are not scored).
"""

from __future__ import annotations

import numpy as np

CAL_SEED = 7100
HELDOUT_SEED = 90_417


def movie_events(seed: int, dose: float, n_frames: int = 30, size: int = 256, max_latency: int = 4) -> list[dict]:
    """Scored events of one simulated movie: dicts of the event's features and ``right``."""
    from engine.pipeline import Pipeline
    from engine.sim.movie import MovieSpec, run_movie
    from stemwatch.config import Config
    from streamer.frame import Frame

    for s in range(seed, seed + 20):
        try:
            frames, truth = run_movie(MovieSpec(n_frames=n_frames, shape_px=(size, size), pixel_size_A=0.1, seed=s,
                                                dopants=("si3", "si3", "si3", "si4"), imaging="random",
                                                dose_e_per_A2=dose, event_rate_per_frame=0.6,
                                                min_event_gap_frames=5, extras=("vacancy",)))
            break
        except ValueError:
            continue
    else:
        return []
    tev = [e for e in truth.events if e["kind"] != "flicker"]
    out = []
    cfg = Config().replace(inference={"backend": "onnx"})
    with Pipeline(cfg) as pipe:
        for i, im in enumerate(frames):
            r = pipe.process(Frame(im, "m", i, 0.2 * i, 0.1))
            for e in r.events:
                if e.kind in ("new_motif", "fov_jump"):
                    continue
                right = any(t["kind"] == e.kind and 0 <= e.frame - int(t["frame"]) <= max_latency
                            and np.hypot(t["x"] - e.x, t["y"] - e.y) * 0.1 <= 2.0 for t in tev)
                ids = np.asarray(r.track_ids)
                k = np.flatnonzero(ids == e.atom_id)
                cp = float(np.max(r.chemistry.atoms.class_prob[k[0]][1:])) if len(k) else float("nan")
                out.append({"kind": e.kind, "confidence": float(e.confidence), "atom_prob": cp,
                            "snr": float(r.health.snr) if r.health is not None else float("nan"),
                            "dose": dose, "right": bool(right)})
    return out


def collect(seed0: int, doses=(5e3, 1e4, 3e4, 1e5), movies_per_dose: int = 3, n_frames: int = 40,
            size: int = 384) -> list[dict]:
    rows = []
    for j, dose in enumerate(doses):
        for m in range(movies_per_dose):
            rows += movie_events(seed0 + 1000 * j + 37 * m, dose, n_frames, size)
    return rows


def fit(rows: list[dict], ridge: float = 3.0, iters: int = 50) -> tuple:
    """Logistic regression (Newton, L2 ``ridge`` except the intercept) of ``right`` on the features of
    :func:`engine.health.confidence.features`."""
    from engine.health.confidence import features

    X = features([r["confidence"] for r in rows], [r["atom_prob"] for r in rows], [r["snr"] for r in rows])
    y = np.array([r["right"] for r in rows], np.float64)
    w = np.zeros(X.shape[1])
    R = ridge * np.eye(X.shape[1])
    R[0, 0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        g = X.T @ (p - y) + R @ w
        H = (X * (p * (1 - p))[:, None]).T @ X + R + 1e-9 * np.eye(len(w))
        w = w - np.linalg.solve(H, g)
    return tuple(float(v) for v in w)


def main(argv=None) -> int:
    import argparse
    import json

    from engine.health.confidence import calibrated
    from lab.health.evaluate import reliability

    p = argparse.ArgumentParser(prog="python -m lab.health.event_eval", description=__doc__.splitlines()[0])
    p.add_argument("--movies", type=int, default=3, help="movies per dose")
    p.add_argument("--fit", action="store_true", help="fit the coefficients on the calibration seeds")
    p.add_argument("--cache", default=None, help="JSON file of already collected rows (cal, heldout)")
    a = p.parse_args(argv)
    if a.cache:
        cal, held = json.load(open(a.cache))
    else:
        cal = collect(CAL_SEED, movies_per_dose=a.movies) if a.fit else []
        held = collect(HELDOUT_SEED, movies_per_dose=a.movies)
    if a.fit:
        print("COEF =", fit(cal))
    for name, rows in (("held-out", held),):
        raw = np.array([r["confidence"] for r in rows])
        ok = np.array([r["right"] for r in rows])
        cal_c = calibrated(raw, [r["atom_prob"] for r in rows], [r["snr"] for r in rows])
        for label, c in (("raw", raw), ("calibrated", cal_c)):
            table, ece = reliability(c, ok)
            print(f"{name} {label}: {len(rows)} events, {ok.mean():.3f} right, ECE {ece:.3f}")
            for t in table:
                print(f"  {t['lo']:.1f}-{t['hi']:.1f}: {t['n']} events, confidence {t['conf']:.3f}, right {t['acc']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
