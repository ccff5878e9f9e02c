"""Event gallery as plain data: before/after image crops around each event with the atoms in them.

:class:`GalleryItem` is what a gallery shows (crops as arrays, atom positions in crop pixels and
their species names); :func:`gallery_items_from_frames` cuts them from whole frames;
:func:`save_gallery` / :func:`load_gallery` keep them in an ``.npz`` (no pickle). Drawing is the
caller's (:func:`dashboard.report.gallery_layout`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

CROP_HALF_A = 6.0                # crops of 12 x 12 A around the event


def crop_around(img: np.ndarray, cx: float, cy: float, half: int):
    """(crop, x0, y0): a (2 half)^2 window of ``img`` around (cx, cy), shifted to stay inside."""
    h, w = img.shape
    x0, y0 = int(round(cx)) - half, int(round(cy)) - half
    x0 = min(max(x0, 0), max(w - 2 * half, 0))
    y0 = min(max(y0, 0), max(h - 2 * half, 0))
    return img[y0:y0 + 2 * half, x0:x0 + 2 * half], x0, y0


@dataclass
class GalleryItem:
    """One event's before/after crops, plain data (what the gallery draws). ``*_xy`` are (N, 2) atom
    positions in the crop's pixels, ``*_species`` their names; ``centre`` the event in crop pixels."""

    event: dict
    before: np.ndarray
    after: np.ndarray
    before_xy: np.ndarray
    before_species: np.ndarray
    after_xy: np.ndarray
    after_species: np.ndarray
    before_seq: int
    after_seq: int
    centre: tuple


def gallery_items_from_frames(events: list, before_of: list, images: dict, atoms: dict, ps: float,
                              half_A: float = CROP_HALF_A) -> list:
    """Gallery items from whole frames (``images`` {seq: image}, ``atoms`` {seq: (xy, species, ids)})."""
    half = int(round(half_A / ps))
    items = []
    for e, b in zip(events, before_of):
        a = int(e["frame"])
        if b not in images or a not in images:
            continue
        parts = []
        for seq in (b, a):
            crop, x0, y0 = crop_around(images[seq], e["x"], e["y"], half)
            xy, sp, _ids = atoms.get(seq, (np.zeros((0, 2)), np.zeros(0, object), None))
            inside = ((xy[:, 0] >= x0 - 0.5) & (xy[:, 0] < x0 + crop.shape[1] - 0.5) & (xy[:, 1] >= y0 - 0.5)
                      & (xy[:, 1] < y0 + crop.shape[0] - 0.5)) if len(xy) else np.zeros(0, bool)
            parts.append((crop, xy[inside] - [x0, y0], sp[inside], (e["x"] - x0, e["y"] - y0)))
        items.append(GalleryItem(e, parts[0][0], parts[1][0], parts[0][1], parts[0][2], parts[1][1], parts[1][2],
                                 int(b), a, parts[1][3]))
    return items


def save_gallery(items: list, path) -> None:
    """Gallery items -> ``gallery.npz`` (no pickle: events as JSON, arrays per item)."""
    arrays = {"events_json": np.array(json.dumps([dict(it.event, before_seq=it.before_seq, after_seq=it.after_seq,
                                                       centre=list(map(float, it.centre))) for it in items],
                                                  default=str))}
    for k, it in enumerate(items):
        arrays[f"b{k}"] = np.asarray(it.before, np.float32)
        arrays[f"a{k}"] = np.asarray(it.after, np.float32)
        arrays[f"bxy{k}"] = np.asarray(it.before_xy, np.float32).reshape(-1, 2)
        arrays[f"axy{k}"] = np.asarray(it.after_xy, np.float32).reshape(-1, 2)
        arrays[f"bsp{k}"] = np.asarray([str(x) for x in it.before_species], dtype="U5")
        arrays[f"asp{k}"] = np.asarray([str(x) for x in it.after_species], dtype="U5")
    np.savez_compressed(path, **arrays)


def load_gallery(path) -> list:
    with np.load(path, allow_pickle=False) as z:
        evs = json.loads(str(z["events_json"]))
        return [GalleryItem(e, z[f"b{k}"], z[f"a{k}"], z[f"bxy{k}"], z[f"bsp{k}"].astype(object), z[f"axy{k}"],
                            z[f"asp{k}"].astype(object), int(e["before_seq"]), int(e["after_seq"]),
                            tuple(e["centre"])) for k, e in enumerate(evs)]


