"""Offline analysis: any input the streamer can import -> ``atoms.csv``, ``events.jsonl``,
``frames.csv``, ``summary.json`` in an output folder (see docs/tracking.md for the formats).

``analyze_file(path, out_dir, cfg)`` runs the same :class:`engine.pipeline.Pipeline` as the live
service, one frame at a time, with a progress bar.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from engine.types import SPECIES, FrameResult

log = logging.getLogger(__name__)

ATOMS_COLUMNS = ("frame", "atom_id", "x", "y", "species", "coordination", "confidence")
FRAMES_COLUMNS = ("frame", "t_acquired", "n_atoms", "n_si", "n_other", "drift_x_A", "drift_y_A", "error")


class ResultWriter:
    """Streams FrameResults into the output files (append-only, flushed per frame)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._atoms = open(self.dir / "atoms.csv", "w", newline="")
        self._events = open(self.dir / "events.jsonl", "w")
        self._frames = open(self.dir / "frames.csv", "w", newline="")
        self._atoms.write(",".join(ATOMS_COLUMNS) + "\n")
        self._frames.write(",".join(FRAMES_COLUMNS) + "\n")
        self.n_frames = 0
        self.n_errors = 0
        self.n_atom_rows = 0
        self.events_by_kind: Counter = Counter()
        self.species_counts: Counter = Counter()
        self.track_ids: set = set()
        self.drift_A: list = []
        self.timings: dict[str, list] = {}
        self.series: list = []

    def write(self, r: FrameResult) -> None:
        atoms = r.chemistry.atoms
        n = len(atoms)
        self.n_frames += 1
        if r.series not in self.series:
            self.series.append(r.series)
        if n:
            sp = np.asarray(atoms.species, np.int64)
            names = np.asarray(SPECIES, dtype=object)[np.clip(sp, 0, len(SPECIES) - 1)]
            coord = np.asarray(r.chemistry.coordination, np.int64)
            rows = np.empty((n, 7), dtype=object)
            rows[:, 0] = int(r.seq)
            rows[:, 1] = np.asarray(r.track_ids, np.int64)
            rows[:, 2] = atoms.xy_px[:, 0]
            rows[:, 3] = atoms.xy_px[:, 1]
            rows[:, 4] = names
            rows[:, 5] = coord
            rows[:, 6] = np.asarray(atoms.confidence, np.float64)
            np.savetxt(self._atoms, rows, fmt="%d,%d,%.3f,%.3f,%s,%d,%.3f")
            self.n_atom_rows += n
            self.species_counts.update(names.tolist())
            self.track_ids.update(np.unique(r.track_ids).tolist())
        for e in r.events:
            d = e.to_dict()
            d["series"] = r.series
            self._events.write(json.dumps(d) + "\n")
            self.events_by_kind[e.kind] += 1
        sp = np.asarray(atoms.species)
        err = (r.error or "").replace(",", ";").replace("\n", " ")
        dx, dy = (float(v) * r.pixel_size_A for v in r.drift_px)
        self._frames.write(f"{r.seq},{r.t_acquired:.6f},{n},{int((sp == 1).sum())},{int((sp == 2).sum())},"
                           f"{dx:.4f},{dy:.4f},{err}\n")
        if r.error:
            self.n_errors += 1
        else:
            self.drift_A.append((dx, dy))
        for k, v in r.timings_s.items():
            self.timings.setdefault(k, []).append(float(v))
        self._atoms.flush()
        self._events.flush()
        self._frames.flush()

    def summary(self, **extra) -> dict:
        drift = np.asarray(self.drift_A[1:]) if len(self.drift_A) > 1 else np.zeros((0, 2))
        speed = np.hypot(drift[:, 0], drift[:, 1]) if len(drift) else np.zeros(0)
        return {
            "frames": self.n_frames,
            "frames_with_error": self.n_errors,
            "series": self.series,
            "atom_rows": self.n_atom_rows,
            "atoms_per_frame": self.n_atom_rows / max(1, self.n_frames - self.n_errors),
            "species_rows": dict(self.species_counts),
            "tracks": len(self.track_ids - {-1}),
            "events": sum(self.events_by_kind.values()),
            "events_by_kind": dict(self.events_by_kind),
            "drift_A_per_frame": {"mean": float(speed.mean()) if len(speed) else 0.0,
                                  "max": float(speed.max()) if len(speed) else 0.0},
            "timings_ms_median": {k: 1e3 * float(np.median(v)) for k, v in self.timings.items()},
            **extra,
        }

    def close(self, summary: dict | None = None) -> None:
        for fh in (self._atoms, self._events, self._frames):
            if not fh.closed:
                fh.close()
        if summary is not None:
            tmp = self.dir / "summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2, default=str))
            os.replace(tmp, self.dir / "summary.json")


def _count_frames(path: Path) -> int | None:
    """Best-effort frame count for the progress bar (None when it would cost a read)."""
    try:
        if path.suffix.lower() == ".npy":
            a = np.load(path, mmap_mode="r", allow_pickle=False)
            return int(a.shape[0]) if a.ndim == 3 else 1
    except Exception:  # the importer will report a real problem
        return None
    return None


def _input_fields(status: dict, stopped_at_limit: bool) -> dict:
    """``input_complete`` / ``input_problem`` / ``input_skipped`` for summary.json. With ``--limit``
    the input may not have been read to its end: what was read is reported."""
    if not status:                    # not read to the end (--limit, or an error): nothing known
        return {"input_complete": None if stopped_at_limit else False,
                "input_problem": "input not read to its end" + (" (--limit)" if stopped_at_limit else ""),
                "input_skipped": []}
    return dict(status)


def analyze_file(path: str | os.PathLike, out_dir: str | os.PathLike, cfg=None, pixel_size_A: float | None = None,
                 key: str | None = None, limit: int | None = None, progress: bool = True,
                 pipeline=None) -> dict:
    """Analyse every frame of ``path`` into ``out_dir``; returns the summary (also summary.json).

    pixel_size_A : A/px for inputs without a calibration (overrides the file's).
    limit : analyse at most this many frames. pipeline : an existing Pipeline (default: a new one).
    """
    from tqdm import tqdm

    from engine.pipeline import Pipeline
    from stemwatch.config import Config
    from streamer.importers import FileImportError, open_frames

    cfg = cfg or Config()
    path = Path(path)
    status: dict = {}
    frames = open_frames(path, pixel_size_A=pixel_size_A, key=key, status=status)
    first = next(frames, None)          # fail on a bad input before creating any output
    if first is None:
        raise FileImportError(f"{path.name}: no frames")
    own = pipeline is None
    pipe = pipeline or Pipeline(cfg)
    writer = ResultWriter(out_dir)
    t0 = time.time()
    total = _count_frames(path)
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    bar = tqdm(total=total, unit="frame", desc=f"analyze {path.name}", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        for i, frame in enumerate(itertools.chain([first], frames)):
            if limit is not None and i >= limit:
                break
            r = pipe.process(frame)
            writer.write(r)
            bar.update(1)
            if r.events:
                bar.set_postfix(events=sum(writer.events_by_kind.values()))
    finally:
        bar.close()
        elapsed = time.time() - t0
        summary = writer.summary(input=str(path), out_dir=str(Path(out_dir)), elapsed_s=elapsed,
                                 frames_per_s=writer.n_frames / elapsed if elapsed > 0 else None,
                                 backend=pipe.backend_description, config=cfg.to_dict(),
                                 **_input_fields(status, limit is not None and writer.n_frames >= limit))
        writer.close(summary)
        if own:
            pipe.close()
    return summary
