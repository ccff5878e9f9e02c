"""Exact ground truth of a simulated movie, and its on-disk format (no pickle).

:class:`FrameTruth` holds every atom that appears in one frame; :class:`GroundTruth` the frames, the
list of events and the movie's metadata. Conventions (as in :mod:`engine.types`): ``xy_px`` is
(x = column, y = row) in the frame's pixels, pixel centres at integers, where the atom *appears*
(including the slow scan drift within the frame); ``xy_A = xy_px * pixel_size_A`` (the frame's
coordinates in angstrom); the sample coordinate of an atom is ``xy_A + origin_A`` up to the
in-frame drift. Ids follow each physical atom over the whole movie; an ejected atom's id ends.

File format (``NAME.truth.npz`` next to the recording ``NAME.swrec``; written with
``numpy.savez_compressed``; read with ``allow_pickle=False``). Per-frame arrays are concatenated,
frame ``i`` owning rows ``offsets[i]:offsets[i+1]``:

==================  ===========  ============================================================
key                 dtype/shape  meaning
==================  ===========  ============================================================
``format``          str (0-d)    ``"stemwatch-truth"``
``version``         int64 (0-d)  1
``seq``             int64 (F,)   frame sequence numbers (the recording's ``seq``)
``offsets``         int64 (F+1,) row ranges of each frame in the atom arrays
``origin_A``        f8 (F, 2)    sample coordinate (A) of the centre of pixel (0, 0)
``xy_px``           f8 (M, 2)    atom positions (x, y) in px
``xy_A``            f8 (M, 2)    the same in A (``xy_px * pixel_size_A``)
``species``         i1 (M,)      0 C, 1 Si, 2 other (:data:`engine.types.SPECIES`)
``ids``             i8 (M,)      atom identity (stable across frames)
``coordination``    i2 (M,)      bonded lattice neighbours (``structures.coordination``); 0 off-lattice
``label``           i1 (M,)      index into ``meta["labels"]`` (``structures.LABELS``)
``events_json``     str (0-d)    JSON list of event dicts (see below)
``meta_json``       str (0-d)    JSON dict: pixel_size_A, shape_px, frame_time_s, imaging, spec...
==================  ===========  ============================================================

An event is a dict with ``frame`` (first frame showing the new state), ``atom_id``, ``kind``
(:data:`engine.types.EVENT_KINDS` or ``"flicker"``), ``before``, ``after`` (strings), ``x``, ``y``
(px in that frame; for an ejected atom, where it was), ``x_A``, ``y_A``, ``members`` (ids involved).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TRUTH_SUFFIX = ".truth.npz"
FORMAT = "stemwatch-truth"
VERSION = 1


@dataclass
class FrameTruth:
    """The atoms of one frame (see the module docstring for units and conventions).

    seq : frame number; xy_px, xy_A : (N, 2) float64; species : (N,) int8; ids : (N,) int64;
    coordination : (N,) int16; label : (N,) int8; origin_A : (2,) sample coordinate of pixel (0, 0);
    events : the events whose ``frame`` is this frame.
    """

    seq: int
    xy_px: np.ndarray
    xy_A: np.ndarray
    species: np.ndarray
    ids: np.ndarray
    coordination: np.ndarray
    label: np.ndarray
    origin_A: np.ndarray = field(default_factory=lambda: np.zeros(2))
    events: list = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.xy_px.shape[0])


@dataclass
class GroundTruth:
    """Frames, events (list of dicts) and metadata (JSON-able dict with at least ``pixel_size_A``)."""

    frames: list
    events: list
    meta: dict

    @property
    def pixel_size_A(self) -> float:
        return float(self.meta["pixel_size_A"])

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> FrameTruth:
        return self.frames[i]

    def events_of(self, kind: str) -> list:
        return [e for e in self.events if e["kind"] == kind]


def truth_path(path: str | Path) -> Path:
    """The truth file of a recording (``x.swrec`` -> ``x.truth.npz``), or ``path`` if it is one."""
    p = Path(path)
    if p.name.endswith(TRUTH_SUFFIX):
        return p
    return p.with_name(p.name[: -len(p.suffix)] + TRUTH_SUFFIX if p.suffix else p.name + TRUTH_SUFFIX)


def save_truth(gt: GroundTruth, path: str | Path) -> Path:
    """Write ``gt`` to ``path`` (a recording path is mapped to its ``.truth.npz``); returns the path.

    Written to a temporary file first and renamed, so a reader never sees half a file.
    """
    p = truth_path(path)
    fr = gt.frames
    counts = np.array([len(f) for f in fr], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def cat(name, dtype, width=None):
        parts = [np.asarray(getattr(f, name), dtype) for f in fr]
        if not parts:
            return np.zeros((0, width) if width else (0,), dtype)
        return np.concatenate([x.reshape(-1, width) if width else x.reshape(-1) for x in parts])

    arrays = {
        "format": np.array(FORMAT), "version": np.array(VERSION, np.int64),
        "seq": np.array([f.seq for f in fr], np.int64), "offsets": offsets,
        "origin_A": np.array([np.asarray(f.origin_A, np.float64) for f in fr]).reshape(-1, 2),
        "xy_px": cat("xy_px", np.float64, 2), "xy_A": cat("xy_A", np.float64, 2),
        "species": cat("species", np.int8), "ids": cat("ids", np.int64),
        "coordination": cat("coordination", np.int16), "label": cat("label", np.int8),
        "events_json": np.array(json.dumps(gt.events)), "meta_json": np.array(json.dumps(gt.meta)),
    }
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    tmp.replace(p)
    return p


def load_truth(path: str | Path) -> GroundTruth:
    """Read a truth file (or the truth beside a recording). Raises FileNotFoundError / ValueError."""
    p = truth_path(path)
    if not p.exists():
        raise FileNotFoundError(f"no ground truth at {p} (simulated recordings have NAME.swrec + NAME{TRUTH_SUFFIX})")
    with np.load(p, allow_pickle=False) as z:
        if "format" not in z.files or str(z["format"]) != FORMAT:
            raise ValueError(f"{p} is not a stemwatch ground-truth file")
        if int(z["version"]) > VERSION:
            raise ValueError(f"{p}: truth format version {int(z['version'])} is newer than this reader ({VERSION})")
        d = {k: z[k] for k in z.files}
    events = json.loads(str(d["events_json"]))
    meta = json.loads(str(d["meta_json"]))
    off = d["offsets"]
    by_frame: dict[int, list] = {}
    for e in events:
        by_frame.setdefault(int(e["frame"]), []).append(e)
    frames = []
    for i, seq in enumerate(d["seq"].tolist()):
        s = slice(int(off[i]), int(off[i + 1]))
        frames.append(FrameTruth(seq=int(seq), xy_px=d["xy_px"][s], xy_A=d["xy_A"][s], species=d["species"][s],
                                 ids=d["ids"][s], coordination=d["coordination"][s], label=d["label"][s],
                                 origin_A=d["origin_A"][i], events=by_frame.get(int(seq), [])))
    return GroundTruth(frames=frames, events=events, meta=meta)
