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

ATOMS_COLUMNS = ("frame", "atom_id", "x", "y", "species", "coordination", "confidence", "edge")
FRAMES_COLUMNS = ("frame", "t_acquired", "n_atoms", "n_si", "n_other", "drift_x_A", "drift_y_A", "error",
                  "verdict", "reason", "scale_source", "pixel_size_A", "declared_pixel_size_A",
                  "estimated_pixel_size_A", "estimated_uncertainty_A", "snr", "material")


def frame_verdict(r: FrameResult) -> str:
    """The verdict on one analysed frame, counted in summary.json (``verdicts``) and in the archive
    index (DIR/index.json): ``"error"`` when a stage failed on it, else its health verdict
    (:attr:`engine.health.FrameHealth.verdict`: ``ok``, or e.g. ``blank``, ``glitch+low_snr``)."""
    if r.error:
        return "error"
    h = getattr(r, "health", None)
    return h.verdict if h is not None else "ok"


def _material_name(r: FrameResult) -> str:
    mat = getattr(r, "material", None)
    return "" if mat is None else mat.verdict


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
        self.events_by_category: Counter = Counter()
        self.species_counts: Counter = Counter()
        self.track_ids: set = set()
        self.drift_A: list = []
        self.timings: dict[str, list] = {}
        self.series: list = []
        self.verdicts: Counter = Counter()      # frame_verdict -> frames
        self.scale_sources: Counter = Counter()
        self.estimates: list = []
        self.material_counts: Counter = Counter()
        self.material_carried = 0                     # verdicts carried over from an earlier full check
        self.material_reasons: list = []

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
            from engine.health.atoms import edge_flags

            rows = np.empty((n, 8), dtype=object)
            rows[:, 0] = int(r.seq)
            rows[:, 1] = np.asarray(r.track_ids, np.int64)
            rows[:, 2] = atoms.xy_px[:, 0]
            rows[:, 3] = atoms.xy_px[:, 1]
            rows[:, 4] = names
            rows[:, 5] = coord
            rows[:, 6] = np.asarray(atoms.confidence, np.float64)
            rows[:, 7] = edge_flags(atoms.xy_px, r.frame_shape, r.pixel_size_A).astype(int)
            np.savetxt(self._atoms, rows, fmt="%d,%d,%.3f,%.3f,%s,%d,%.3f,%d")
            self.n_atom_rows += n
            self.species_counts.update(names.tolist())
            self.track_ids.update(np.unique(r.track_ids).tolist())
        for e in r.events:
            d = e.to_dict()
            d["series"] = r.series
            self._events.write(json.dumps(d) + "\n")
            self.events_by_kind[e.kind] += 1
            self.events_by_category[e.category] += 1
        sp = np.asarray(atoms.species)
        err = (r.error or "").replace(",", ";").replace("\n", " ")
        dx, dy = (float(v) * r.pixel_size_A for v in r.drift_px)
        h = getattr(r, "health", None)
        hd = h.to_dict() if h is not None else {}
        if h is not None:
            self.scale_sources[h.scale_source] += 1
            if hd.get("estimated_pixel_size_A"):
                self.estimates.append(hd["estimated_pixel_size_A"])

        def num(v, fmt="{:.5g}"):
            return "" if v is None else fmt.format(v)

        reason = "; ".join(hd.get("reasons", ())).replace(",", ";").replace("\n", " ")
        self._frames.write(f"{r.seq},{r.t_acquired:.6f},{n},{int((sp == 1).sum())},{int((sp == 2).sum())},"
                           f"{dx:.4f},{dy:.4f},{err},{hd.get('verdict', '')},{reason},{hd.get('scale_source', '')},"
                           f"{r.pixel_size_A:.5g},{num(hd.get('declared_pixel_size_A'))},"
                           f"{num(hd.get('estimated_pixel_size_A'))},{num(hd.get('estimated_uncertainty_A'))},"
                           f"{num(hd.get('snr'), '{:.2f}')},{_material_name(r)}\n")
        self.verdicts[frame_verdict(r)] += 1
        mat = getattr(r, "material", None)
        if mat is not None:
            self.material_counts[mat.verdict] += 1
            carried = getattr(mat, "carried_from_frame", -1) >= 0     # a CadencedVerdict carried over
            self.material_carried += int(carried)
            # the reasons of full checks (a carried-over verdict repeats its check's reason)
            if not mat.is_graphene and not carried and mat.reason not in self.material_reasons:
                self.material_reasons.append(mat.reason)
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
            "events_by_category": dict(self.events_by_category),
            "drift_A_per_frame": {"mean": float(speed.mean()) if len(speed) else 0.0,
                                  "max": float(speed.max()) if len(speed) else 0.0},
            "timings_ms_median": {k: 1e3 * float(np.median(v)) for k, v in self.timings.items()},
            "verdicts": dict(self.verdicts),
            "frames_not_ok": sum(v for k, v in self.verdicts.items() if k != "ok"),
            "scale": {"sources": dict(self.scale_sources),
                      "estimated_pixel_size_A_median": float(np.median(self.estimates)) if self.estimates else None},
            "material": {"frames_by_verdict": dict(self.material_counts),
                         "frames_not_graphene": sum(v for k, v in self.material_counts.items() if k != "graphene"),
                         "reasons": self.material_reasons[:10],
                         "frames_checked_in_full": sum(self.material_counts.values()) - self.material_carried,
                         "frames_carried_over": self.material_carried},
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
                 pipeline=None, dose_e_per_A2: float | None = None, on_result=(), keep_image: bool = False,
                 summary_extra=None) -> dict:
    """Analyse every frame of ``path`` into ``out_dir``; returns the summary (also summary.json).

    pixel_size_A : A/px for inputs without a calibration (overrides the file's).
    limit : analyse at most this many frames. pipeline : an existing Pipeline (default: a new one).
    dose_e_per_A2 : electron dose per frame (overrides the series metadata); the dopant statistics
    (``dopants.csv``, ``stats.json``, ``transitions.csv``; :mod:`engine.stats`) use it.
    on_result : callables ``(FrameResult) -> None`` called with every result in order (e.g. the event
    gallery of ``analyze --gallery``, :mod:`dashboard.gallery_cli`); keep_image : attach each frame's
    pixels to its result for them; summary_extra : a callable returning more summary.json fields.
    """
    from engine import stats as dstats

    from tqdm import tqdm

    from engine.overlap import Overlap, overlap_enabled
    from engine.pipeline import Pipeline
    from stemwatch.config import Config
    from streamer.source import FileSource

    cfg = cfg or Config()
    path = Path(path)
    source = FileSource(path, pixel_size_A=pixel_size_A, key=key).open()   # a bad input fails before any output
    own = pipeline is None
    pipe = pipeline or Pipeline(cfg, keep_image=keep_image)
    if keep_image:
        pipe.keep_image = True
    writer = ResultWriter(out_dir)
    first = source.read()               # open() made sure there is one; it sets the series' dose and metadata
    dose, dose_src = dstats.dose_per_frame(first.meta, first.pixel_size_A, dose_e_per_A2)
    acc = dstats.StatsAccumulator(dose, dose_src)
    dopants_fh = open(Path(out_dir) / "dopants.csv", "w")
    dopants_fh.write(",".join(dstats.DOPANTS_COLUMNS) + "\n")
    finished = False
    t0 = time.time()
    total = _count_frames(path)
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    bar = tqdm(total=total, unit="frame", desc=f"analyze {path.name}", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)

    def take(done) -> None:
        if done is None:
            return
        r = done.result
        writer.write(r)
        acc.add(r)
        dopants_fh.write(dstats.dopants_csv_rows(acc.last_observations()))
        for hook in on_result:
            hook(r)
        bar.update(1)
        if r.events:
            bar.set_postfix(events=sum(writer.events_by_kind.values()))

    # the network of the next frame runs while this one is finished (engine.overlap; same results)
    ov = Overlap(pipe, overlap_enabled(cfg.pipeline.overlap)).start()
    try:
        for i, frame in enumerate(itertools.chain([first], source.frames())):
            if limit is not None and i >= limit:
                break
            take(ov.push(frame))
        take(ov.flush())
        finished = True
    finally:
        overlap_stopped = ov.close()
        dopants_fh.close()
        st = acc.stats(complete=finished, note="" if finished else "analysis stopped early: statistics of the "
                       "frames analysed so far")
        dstats.write_stats(st, out_dir)
        bar.close()
        source.close()
        elapsed = time.time() - t0
        report = source.report()
        summary = writer.summary(input=str(path), out_dir=str(Path(out_dir)), elapsed_s=elapsed,
                                 frames_per_s=writer.n_frames / elapsed if elapsed > 0 else None,
                                 backend=pipe.backend_description, config=cfg.to_dict(),
                                 dose={"e_per_A2_per_frame": dose, "source": dose_src},
                                 dopant_transitions={t["kind"]: t["count"] for t in st.transitions()},
                                 acquisition={"series": first.series, "shape_px": list(first.data.shape),
                                              "pixel_size_A": float(first.pixel_size_A),
                                              "pixel_size_source": "--pixel-size option" if pixel_size_A
                                              else "input calibration",
                                              "meta": first.meta},
                                 source=report.to_dict(),
                                 **_input_fields(source.status, limit is not None and writer.n_frames >= limit),
                                 warnings=list(getattr(getattr(pipe, "health", None), "warnings", [])),
                                 **(summary_extra() if summary_extra is not None else {}))
        writer.close(summary)
        if own and overlap_stopped:
            pipe.close()
    return summary
