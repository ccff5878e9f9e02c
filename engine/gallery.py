"""Event gallery as plain data: the before/after crops around an event with the atoms and bonds in them.

The one place that cuts gallery crops. Every gallery draws what this module cuts, with the one
renderer :func:`dashboard.gallery.render`: the dashboard's before/after panel, ``stemwatch analyze
--gallery`` (PNG files) and the session report (``stemwatch report``, also from a live session's
``gallery.npz``).

* :class:`GalleryFrame`: what the gallery needs of one analysed frame (image, atoms in angstrom
  with species, coordination, edge flag and track id, bond segments, drift). Made from a
  FrameResult (:func:`gallery_frame`), from the dashboard's DisplayFrame
  (:func:`dashboard.gallery.from_display`) or from an analysis folder (the report).
* :func:`before_frame` picks the frame before an event (the newest before its first changed frame),
  :func:`centre_in` finds the event's spot there (the field drifts), :func:`cut` cuts one
  :class:`Panel`, :func:`gallery_item` the :class:`GalleryItem` (before and after panels).
* :func:`save_gallery` / :func:`load_gallery` keep items in an ``.npz`` (no pickle).

Cutting is array slicing and boolean masks (no per-atom Python loop); it runs once per event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from engine.types import SPECIES

#: crop width and height (A) around the event
CROP_A = 16.0
#: atoms and bonds are kept this far (A) outside the crop (a bond reaching into it is drawn whole)
MARGIN_A = 2.5
#: bonds between atoms closer than this (A) when a frame's bond graph is not at hand (the report
#: reads atoms.csv, which has no bonds): C-C 1.42, Si-C 1.77 A
BOND_CUTOFF_A = 1.95


@dataclass
class GalleryFrame:
    """One analysed frame as the gallery needs it (plain data).

    image : (h, w) frame image, row 0 on top, or None; ``step_A`` angstrom per image pixel (the
        pixel size times a display binning); ``value_range`` (lo, hi) of image values drawn black ..
        white, or None to stretch each crop by its own percentiles.
    xy_A : (N, 2) atom positions (x = column, y = row) in angstrom; ``species`` (N,) names
        (``engine.types.SPECIES``); ``coordination`` (N,) bond counts; ``edge`` (N,) atoms at the
        field's edge; ``track`` (N,) track ids (-1: none).
    bonds_A : (M, 4) bond segments x0, y0, x1, y1 in angstrom. ``drift_A``: this frame's drift
        relative to the previous one (A).
    """

    seq: int
    series: str
    image: np.ndarray | None
    step_A: float
    xy_A: np.ndarray
    species: np.ndarray
    coordination: np.ndarray
    edge: np.ndarray
    track: np.ndarray
    bonds_A: np.ndarray
    drift_A: tuple = (0.0, 0.0)
    value_range: tuple | None = None


@dataclass
class Panel:
    """One crop, plain data. ``image`` (h, w) float32, NaN outside the frame; ``step_A`` angstrom per
    crop pixel; positions in crop pixels (x = column, y = row, pixel centres at integers): ``xy``
    (N, 2) atoms with ``species`` (names), ``coordination``, ``edge``; ``bonds`` (M, 4) segments;
    ``centre`` the event's spot; ``size_A`` the side of the square to show around it."""

    seq: int
    image: np.ndarray
    step_A: float
    xy: np.ndarray
    species: np.ndarray
    coordination: np.ndarray
    edge: np.ndarray
    bonds: np.ndarray
    centre: tuple
    size_A: float = CROP_A
    value_range: tuple | None = None


@dataclass
class GalleryItem:
    """One event's crops: ``event`` (the event's dict, as in events.jsonl), ``before`` (None when no
    earlier frame was kept) and ``after`` (the frame that confirmed it)."""

    event: dict
    after: Panel
    before: Panel | None = None


def event_dict(event) -> dict:
    """An :class:`engine.types.Event` or an events.jsonl dict -> a dict."""
    return dict(event) if isinstance(event, dict) else event.to_dict()


def species_names(codes) -> np.ndarray:
    """Species codes -> names (``engine.types.SPECIES``; out-of-range codes clipped)."""
    codes = np.asarray(codes, np.int64).reshape(-1)
    return np.asarray(SPECIES, object)[np.clip(codes, 0, len(SPECIES) - 1)]


def bonds_by_distance(xy: np.ndarray, cutoff: float) -> np.ndarray:
    """(M, 2) index pairs of points closer than ``cutoff`` (same unit as ``xy``)."""
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(xy) < 2:
        return np.zeros((0, 2), np.int64)
    return np.asarray(sorted(cKDTree(xy).query_pairs(cutoff)), np.int64).reshape(-1, 2)


def segments(xy: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(M, 4) segments x0, y0, x1, y1 of index ``pairs`` into ``xy``."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    p = np.asarray(pairs, np.int64).reshape(-1, 2)
    return np.concatenate([xy[p[:, 0]], xy[p[:, 1]]], axis=1)


def gallery_frame(result, image: np.ndarray | None = None, step_A: float | None = None,
                  value_range: tuple | None = None) -> GalleryFrame:
    """The :class:`GalleryFrame` of a FrameResult (its own ``image`` unless one is given)."""
    chem = result.chemistry
    atoms = chem.atoms
    n = len(atoms)
    ps = float(result.pixel_size_A)
    xy = np.asarray(atoms.xy_px, np.float64).reshape(n, 2) * ps
    coord = np.asarray(chem.coordination if chem.coordination is not None else np.full(n, -1), np.int16)
    edge = np.asarray(atoms.border, bool) if atoms.border is not None else np.zeros(n, bool)
    track = np.asarray(result.track_ids if result.track_ids is not None else np.full(n, -1), np.int64)
    image = result.image if image is None else image
    return GalleryFrame(
        seq=int(result.seq), series=str(result.series), image=None if image is None else np.asarray(image),
        step_A=float(step_A) if step_A else ps, xy_A=xy, species=species_names(atoms.species), coordination=coord,
        edge=edge, track=track, bonds_A=segments(xy, chem.bonds), drift_A=tuple(float(v) * ps for v in result.drift_px),
        value_range=value_range)


def before_frame(frames, event, series: str | None = None):
    """The newest of ``frames`` (GalleryFrames, oldest first) before the event's first changed frame."""
    e = event_dict(event)
    first = int(e.get("first_frame", -1))
    first = first if first >= 0 else int(e["frame"])
    best = None
    for f in frames:
        if f.seq < first and (series is None or f.series == series):
            best = f
    return best


def centre_in(frame: GalleryFrame, event, frames=(), after: GalleryFrame | None = None) -> tuple[float, float]:
    """Where the event's spot of the sample is in ``frame`` (A; the field drifts between frames): the
    event atom's track there if it exists, else the event position moved back by the drift of the
    frames after ``frame`` up to ``after`` (``frames``: GalleryFrames, oldest first)."""
    e = event_dict(event)
    tid = int(e.get("atom_id", -1))
    hit = np.flatnonzero(np.asarray(frame.track) == tid) if tid >= 0 else []
    if len(hit):
        return float(frame.xy_A[hit[0], 0]), float(frame.xy_A[hit[0], 1])
    shift = np.zeros(2)
    for f in list(frames) + ([after] if after is not None else []):
        if f is not None and frame.seq < f.seq <= int(e["frame"]) and f.series == frame.series:
            shift += np.asarray(f.drift_A, float)
    return float(e["x_A"] - shift[0]), float(e["y_A"] - shift[1])


def cut(frame: GalleryFrame, centre_A: tuple[float, float], size_A: float = CROP_A) -> Panel:
    """The :class:`Panel` of ``frame`` around ``centre_A``: the image pixels covering ``size_A``
    (NaN beyond the frame), the atoms and bond segments within :data:`MARGIN_A` of it."""
    cx, cy = (float(v) for v in centre_A)
    step = float(frame.step_A)
    half = size_A / 2.0
    x0 = int(np.floor((cx - half) / step)) - 1
    y0 = int(np.floor((cy - half) / step)) - 1
    n = int(np.ceil(size_A / step)) + 3
    img = np.full((n, n), np.nan, np.float32)
    if frame.image is not None and np.ndim(frame.image) == 2 and np.size(frame.image) > 1:
        h, w = frame.image.shape
        r0, r1, c0, c1 = max(y0, 0), min(y0 + n, h), max(x0, 0), min(x0 + n, w)
        if r1 > r0 and c1 > c0:
            img[r0 - y0:r1 - y0, c0 - x0:c1 - x0] = frame.image[r0:r1, c0:c1]
    lim = half + MARGIN_A
    xy = np.asarray(frame.xy_A, np.float64).reshape(-1, 2)
    keep = (np.abs(xy[:, 0] - cx) <= lim) & (np.abs(xy[:, 1] - cy) <= lim)
    b = np.asarray(frame.bonds_A, np.float64).reshape(-1, 4)
    bkeep = ((np.abs(b[:, [0, 2]] - cx) <= lim).all(1) & (np.abs(b[:, [1, 3]] - cy) <= lim).all(1)) if len(b) \
        else np.zeros(0, bool)
    org = np.array([x0, y0], np.float64)
    return Panel(seq=int(frame.seq), image=img, step_A=step, xy=xy[keep] / step - org,
                 species=np.asarray(frame.species, object)[keep], coordination=np.asarray(frame.coordination)[keep],
                 edge=np.asarray(frame.edge, bool)[keep], bonds=b[bkeep] / step - np.tile(org, 2),
                 centre=(cx / step - x0, cy / step - y0), size_A=float(size_A), value_range=frame.value_range)


def gallery_item(event, before: GalleryFrame | None, after: GalleryFrame, frames=(),
                 size_A: float = CROP_A) -> GalleryItem:
    """The before/after crops of ``event``: the ``after`` crop centred on the event's position, the
    ``before`` one on the same spot of the sample (:func:`centre_in`); ``frames`` the GalleryFrames
    between them (for the drift when the event's track is not in ``before``)."""
    e = event_dict(event)
    c = (float(e["x_A"]), float(e["y_A"]))
    b = cut(before, centre_in(before, e, frames, after), size_A) if before is not None else None
    return GalleryItem(e, cut(after, c, size_A), b)


# ------------------------------------------------------------------------------ files
_PANEL_ARRAYS = ("image", "xy", "species", "coordination", "edge", "bonds")


def save_gallery(items: list, path) -> None:
    """Gallery items -> ``gallery.npz`` (no pickle: events and panel scalars as JSON, arrays per panel)."""
    meta, arrays = [], {}
    for k, it in enumerate(items):
        m = {"event": it.event, "panels": {}}
        for side in ("before", "after"):
            p = getattr(it, side)
            if p is None:
                continue
            m["panels"][side] = {"seq": p.seq, "step_A": p.step_A, "centre": [float(v) for v in p.centre],
                                 "size_A": p.size_A,
                                 "value_range": None if p.value_range is None else [float(v) for v in p.value_range]}
            arrays[f"{side}{k}_image"] = np.asarray(p.image, np.float32)
            arrays[f"{side}{k}_xy"] = np.asarray(p.xy, np.float32).reshape(-1, 2)
            arrays[f"{side}{k}_species"] = np.asarray([str(x) for x in p.species], dtype="U5")
            arrays[f"{side}{k}_coordination"] = np.asarray(p.coordination, np.int16)
            arrays[f"{side}{k}_edge"] = np.asarray(p.edge, bool)
            arrays[f"{side}{k}_bonds"] = np.asarray(p.bonds, np.float32).reshape(-1, 4)
        meta.append(m)
    np.savez_compressed(path, items_json=np.array(json.dumps(meta, default=str)), **arrays)


def load_gallery(path) -> list:
    """``gallery.npz`` -> gallery items (see :func:`save_gallery`)."""
    items = []
    with np.load(path, allow_pickle=False) as z:
        for k, m in enumerate(json.loads(str(z["items_json"]))):
            panels = {}
            for side, s in m["panels"].items():
                a = {name: z[f"{side}{k}_{name}"] for name in _PANEL_ARRAYS}
                panels[side] = Panel(seq=int(s["seq"]), step_A=float(s["step_A"]), centre=tuple(s["centre"]),
                                     size_A=float(s["size_A"]),
                                     value_range=None if s["value_range"] is None else tuple(s["value_range"]),
                                     image=a["image"], xy=a["xy"], species=a["species"].astype(object),
                                     coordination=a["coordination"], edge=a["edge"], bonds=a["bonds"])
            items.append(GalleryItem(m["event"], panels["after"], panels.get("before")))
    return items
