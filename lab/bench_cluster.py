"""``stemwatch bench cluster``: archive analysis on a local Dask cluster of 1 and 2 worker processes
beside the single-process ``stemwatch analyze`` of the same inputs, in the same run.

Inputs: the bundled recordings (replay_data/*.swrec; ``--quick``: their first 8 frames each).
Each mode analyses every input into its own folder; the table gives the wall time (with the model
load or the cluster start), the analysis time without it, frames/s over the analysis time, the
speed-up over one process and the scaling efficiency (frames/s of N workers / (N x frames/s of 1
worker)). The cluster's atoms.csv and events.jsonl are compared byte for byte with one process's.
The machine's load average is recorded: other work on the machine changes every figure.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from stemwatch.bench import BenchReport

ROOT = Path(__file__).resolve().parents[1]


def _single(paths, out: Path, cfg, limit) -> dict:
    from engine.analyze import analyze_file
    from engine.pipeline import Pipeline

    t0 = time.time()
    frames, analysis_s, backend = 0, 0.0, ""
    for p in paths:
        with Pipeline(cfg) as pipe:                  # a new pipeline per input, as `stemwatch analyze` does
            s = analyze_file(p, out / p.stem, cfg, limit=limit, progress=False, pipeline=pipe)
        frames += s["frames"]
        analysis_s += s["elapsed_s"]
        backend = s["backend"]
    return {"frames": frames, "wall_s": time.time() - t0, "analysis_s": analysis_s, "backend": backend}


def _cluster(paths, out: Path, cfg, limit, workers: int) -> dict:
    from engine.archive import analyze_archive

    t0 = time.time()
    index = analyze_archive([str(p) for p in paths], out, cfg, scheduler=f"local:{workers}", limit=limit,
                            progress=False, dashboard_address=":0")
    if index["status"] != "complete":
        raise RuntimeError(f"cluster run with {workers} workers: {index['status']}: "
                           + "; ".join(f"{e['input']}: {e['reason']}" for e in index["inputs"] if e["reason"]))
    return {"frames": index["frames_done"], "wall_s": time.time() - t0, "analysis_s": index["analysis_s"],
            "backend": index["inputs"][0]["backend"], "startup_s": index["startup_s"]}


def _identical(a: Path, b: Path, names) -> bool:
    return all((a / n / f).read_bytes() == (b / n / f).read_bytes()
               for n in names for f in ("atoms.csv", "events.jsonl", "frames.csv"))


def _stages_2048(cfg, n: int = 3) -> dict:
    """Median stage times (ms) and atoms of a 2048x2048 frame at 0.1 A/px in one process: frame 0 of
    02_field_512 tiled 4 x 4 (the seams add a few defects), moved 2 px per frame for the tracker."""
    import numpy as np

    from engine.pipeline import Pipeline
    from streamer.importers import open_frames

    f0 = next(open_frames(ROOT / "replay_data" / "02_field_512.swrec"))
    big = np.tile(np.asarray(f0.data), (4, 4))
    times: dict[str, list] = {}
    atoms = 0
    with Pipeline(cfg) as pipe:
        for i in range(n):
            f0.data, f0.seq = np.ascontiguousarray(np.roll(big, 2 * i, axis=1)), i
            r = pipe.process(f0)
            atoms = len(r.chemistry.atoms)
            for k, v in r.timings_s.items():
                times.setdefault(k, []).append(1e3 * v)
    return {"atoms": atoms, **{f"{k}_ms": float(np.median(v)) for k, v in times.items()}}


def bench_cluster(quick: bool = False) -> BenchReport:
    from engine.infer.backends import physical_cores
    from stemwatch.config import Config

    import logging

    import engine.archive  # noqa: F401 -- distributed sets its loggers up when imported

    logging.getLogger("distributed").setLevel(logging.WARNING)     # not every worker start and stop
    paths = sorted((ROOT / "replay_data").glob("*.swrec"))
    if not paths:
        raise FileNotFoundError(f"no recordings in {ROOT / 'replay_data'}")
    limit = 8 if quick else None
    cfg = Config().replace(inference={"backend": "onnx"})
    load_before = os.getloadavg()
    rows, runs = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
        tmp = Path(tmp)
        runs["single"] = _single(paths, tmp / "single", cfg, limit)
        for n in (1, 2):
            runs[n] = _cluster(paths, tmp / f"local{n}", cfg, limit, n)
        names = [p.stem for p in paths]
        same = {n: _identical(tmp / "single", tmp / f"local{n}", names) for n in (1, 2)}
    big = _stages_2048(cfg)
    load_after = os.getloadavg()
    fps = {k: r["frames"] / r["analysis_s"] for k, r in runs.items()}
    for k, r in runs.items():
        n = 0 if k == "single" else k
        rows.append({
            "mode": "analyze (1 process)" if k == "single" else f"local:{n}",
            "workers": "-" if k == "single" else n,
            "frames": r["frames"],
            "wall_s": r["wall_s"],
            "analysis_s": r["analysis_s"],
            "frames/s": fps[k],
            "speed-up": fps[k] / fps["single"],
            "efficiency": "-" if k == "single" else fps[k] / (n * fps[1]),
            "identical": "-" if k == "single" else ("yes" if same[n] else "NO"),
            "backend": r["backend"],
        })
    notes = {
        "inputs": ", ".join(f"{p.name}" for p in paths) + (" (first 8 frames each)" if quick else " (all frames)"),
        "physical cores": physical_cores(),
        "load average (1, 5, 15 min) before": " ".join(f"{v:.2f}" for v in load_before),
        "load average after": " ".join(f"{v:.2f}" for v in load_after),
        "cluster startup_s (1, 2 workers)": " ".join(f"{runs[n]['startup_s']:.1f}" for n in (1, 2)),
        "analysis_s": "single: sum of the inputs' analysis times; cluster: from workers ready (network loaded) "
                      "to the last input written. wall_s adds the model load / cluster start",
        "efficiency": "frames/s of N workers / (N x frames/s of 1 worker)",
        "one 2048x2048 frame at 0.1 A/px, 1 process (median of 3)": ", ".join(
            f"{k} {v:.0f}" for k, v in big.items()),
    }
    return BenchReport(name="cluster", columns=["mode", "workers", "frames", "wall_s", "analysis_s", "frames/s",
                                                "speed-up", "efficiency", "identical", "backend"],
                       rows=rows, notes=notes)

