"""From a :class:`engine.types.FrameResult` to compact display records and Bokeh column dicts.

Nothing here imports Bokeh: these are plain numpy functions, unit-tested without a server.

Coordinates on screen are angstrom: an atom at ``(x, y)`` input-frame pixels is drawn at
``(x * pixel_size_A, y * pixel_size_A)``; pixel ``(col, row)`` covers
``[(col - 0.5) * p, (col + 0.5) * p]`` so the image and the atoms line up exactly. The y axis is
flipped on screen (row 0 at the top, as on the microscope).

Sizes on the wire (the budget ``max_update_bytes``): the image travels as uint8 (1 byte per
displayed pixel, binned by an integer factor when needed), atom columns as float32/int8/int32
binary arrays (~19 bytes per atom), bonds as 4 float32 (16 bytes per bond).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from engine.types import SI, SPECIES, Event, FrameResult

#: Atom display categories (the ``cat`` column), in legend order.
ATOM_CATEGORIES: tuple[str, ...] = (
    "C (3 bonds)", "C (other)", "Si 3-fold", "Si 4-fold", "Si (other)", "other heavy", "C at edge",
)
#: One colour per category: chosen to stand out on gray, viridis and inferno images.
ATOM_COLORS: tuple[str, ...] = ("#4dd0e1", "#ff9800", "#ff1744", "#ffd600", "#d500f9", "#76ff03", "#78909c")
#: Marker size (screen px) per category: dopants larger than carbon.
ATOM_SIZES: tuple[float, ...] = (5.0, 7.0, 15.0, 15.0, 15.0, 13.0, 4.0)

#: Bytes per atom and per bond on the wire (see :func:`atom_columns`, :func:`bond_columns`).
ATOM_BYTES = 4 + 4 + 1 + 1 + 1 + 4 + 4 + 2 + 4 + 4
BOND_BYTES = 16
#: Allowance for the JSON part of an update (keys, defects, title, status).
JSON_OVERHEAD_BYTES = 48_000

EVENT_LABELS = {
    "si_3_to_4": "Si 3→4-fold", "si_4_to_3": "Si 4→3-fold", "si_appeared": "Si appeared",
    "si_lost": "Si lost", "si_hop": "Si hop", "dimer_formed": "Si dimer formed",
    "dimer_broken": "Si dimer broken", "formula_changed": "defect formula changed", "rotor": "defect rotated",
    "vacancy_created": "vacancy created", "new_motif": "new motif",
}


def event_label(kind: str) -> str:
    """Human-readable name of an event kind (unknown kinds are shown as they are)."""
    return EVENT_LABELS.get(kind, kind.replace("_", " "))


def atom_category(species: np.ndarray, coordination: np.ndarray, border: np.ndarray | None = None) -> np.ndarray:
    """Category code (index into :data:`ATOM_CATEGORIES`) per atom; vectorised.

    species : (N,) int codes into :data:`engine.types.SPECIES`; coordination : (N,) bond counts;
    border : (N,) bool, atoms at the frame edge (a carbon there is "C at edge": its missing
    neighbours are outside the field, not a defect).
    """
    species = np.asarray(species)
    coordination = np.asarray(coordination)
    cat = np.full(species.shape, 5, np.int8)
    c = species == 0
    cat[c] = np.where(coordination[c] == 3, 0, 1)
    if border is not None:
        cat[c & np.asarray(border, bool) & (coordination != 3)] = 6
    si = species == SI
    cat[si] = np.select([coordination[si] == 3, coordination[si] == 4], [2, 3], 4)
    return cat


@dataclass
class DisplayFrame:
    """One analysed frame as the dashboard keeps it in its history ring buffer.

    idx : the hub's running index of this frame (monotonic across series; the slider's unit).
    image : (h, w) uint8 or None, the frame binned by ``bin_factor`` and mapped to 0..255 from
        ``intensity_range`` (original units); row 0 is the top row.
    atoms : dict of column arrays (see :func:`atom_columns`), positions in angstrom.
    bonds : dict x0/y0/x1/y1 float32 angstrom, or None when over the byte budget.
    defects : dict of lists x/y (angstrom), kind, formula, motif, n (member count).
    """

    idx: int
    series: str
    seq: int
    t_acquired: float
    t_done: float
    t_shown_ready: float
    pixel_size_A: float
    frame_shape: tuple[int, int]
    image: np.ndarray | None
    bin_factor: int
    intensity_range: tuple[float, float]
    atoms: dict
    bonds: dict | None
    defects: dict
    events: list = field(default_factory=list)
    drift_px: tuple[float, float] = (0.0, 0.0)
    timings_s: dict = field(default_factory=dict)
    si_track: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    si_coord: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    error: str | None = None
    material: tuple | None = None      # (verdict, reason, graphene_fraction) of engine.health.material

    @property
    def n_atoms(self) -> int:
        return int(self.atoms["x"].shape[0])

    @property
    def field_A(self) -> tuple[float, float]:
        """(width, height) of the field of view in angstrom."""
        H, W = self.frame_shape
        return W * self.pixel_size_A, H * self.pixel_size_A

    def payload_bytes(self) -> int:
        """Binary bytes this frame puts on the wire (image + atoms + bonds), excluding JSON."""
        n = self.image.nbytes if self.image is not None else 0
        n += sum(a.nbytes for a in self.atoms.values())
        if self.bonds is not None:
            n += sum(a.nbytes for a in self.bonds.values())
        return n


def robust_range(image: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5,
                 max_samples: int = 65536) -> tuple[float, float]:
    """Percentile range of a strided subsample of ``image`` (NaN/inf ignored); never empty."""
    step = max(1, int(math.sqrt(image.size / max_samples)))
    sample = np.asarray(image[::step, ::step], dtype=np.float32).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, (lo_pct, hi_pct))
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
        if not hi > lo:
            hi = lo + 1.0
    return float(lo), float(hi)


def choose_bin_factor(shape: tuple[int, int], image_budget_bytes: int) -> int:
    """Smallest integer binning so that the uint8 image fits ``image_budget_bytes``."""
    H, W = shape
    f = 1
    while (H // f) * (W // f) > image_budget_bytes and f < max(H, W):
        f += 1
    return f


def to_uint8(image: np.ndarray, bin_factor: int = 1) -> tuple[np.ndarray, tuple[float, float]]:
    """Bin ``image`` (H, W) by ``bin_factor`` (block mean, ragged edge dropped) and map its robust
    range to uint8 0..255. Returns (u8 (H//f, W//f), (lo, hi) in the input's units)."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"display image must be 2-D (H, W), got shape {img.shape}")
    f = int(bin_factor)
    if f > 1:
        h, w = img.shape[0] // f, img.shape[1] // f
        img = img[: h * f, : w * f].astype(np.float32).reshape(h, f, w, f).mean(axis=(1, 3))
    lo, hi = robust_range(img)
    return map_uint8(img, lo, hi), (lo, hi)


def map_uint8(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``image`` values ``lo`` .. ``hi`` -> uint8 0 .. 255 (clipped; NaN black)."""
    out = np.asarray(image, dtype=np.float32) - np.float32(lo)
    out *= np.float32(255.0 / (hi - lo))
    np.nan_to_num(out, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def atom_columns(result: FrameResult) -> dict:
    """Column arrays for the atom overlay of one frame (all binary-serialisable, angstrom)."""
    chem = result.chemistry
    atoms = chem.atoms
    n = len(atoms)
    p = float(result.pixel_size_A)
    xy = np.asarray(atoms.xy_px, dtype=np.float64).reshape(n, 2)
    coord = np.asarray(chem.coordination if chem.coordination is not None else np.zeros(n), np.int16)
    species = np.asarray(atoms.species, np.int8)
    tid = np.asarray(result.track_ids if result.track_ids is not None else np.full(n, -1), np.int64)
    if tid.shape[0] != n:
        raise ValueError(f"track_ids has {tid.shape[0]} entries for {n} atoms")
    defect = (np.asarray(chem.atom_defect, np.int16) if chem.atom_defect is not None
              else np.full(n, -1, np.int16))
    border = np.asarray(atoms.border, bool) if atoms.border is not None else None
    cat = atom_category(species, coord, border)
    confirmed = getattr(result, "confirmed", None)
    alpha = (np.where(np.asarray(confirmed, bool), 0.9, 0.35).astype(np.float32)
             if confirmed is not None and len(confirmed) == n else np.full(n, 0.9, np.float32))
    return {
        "x": (xy[:, 0] * p).astype(np.float32),
        "y": (xy[:, 1] * p).astype(np.float32),
        "cat": cat,
        "sp": species,
        "coord": np.clip(coord, -1, 127).astype(np.int8),
        "tid": np.clip(tid, -1, 2**31 - 1).astype(np.int32),
        "conf": np.asarray(atoms.confidence, np.float32),
        "defect": defect,
        "size": np.asarray(ATOM_SIZES, np.float32)[cat],
        "alpha": alpha,            # tracks not yet confirmed are drawn faint
    }


def bond_columns(result: FrameResult) -> dict:
    """Bond segments (x0, y0, x1, y1) in angstrom, float32."""
    chem = result.chemistry
    bonds = np.asarray(chem.bonds, dtype=np.int64).reshape(-1, 2)
    xy = np.asarray(chem.atoms.xy_px, dtype=np.float64) * float(result.pixel_size_A)
    a, b = xy[bonds[:, 0]], xy[bonds[:, 1]]
    return {"x0": a[:, 0].astype(np.float32), "y0": a[:, 1].astype(np.float32),
            "x1": b[:, 0].astype(np.float32), "y1": b[:, 1].astype(np.float32)}


def defect_columns(result: FrameResult) -> dict:
    """Defect centres (angstrom) with kind, formula, motif and member count (plain lists).

    ``label`` (drawn next to the defect) is the formula for dopant defects (formula with Si or a
    heavier atom) and empty for plain carbon defects, which are only outlined (hover tells more).
    """
    p = float(result.pixel_size_A)
    ds = result.chemistry.defects or []
    return {
        "label": [str(d.formula) if not str(d.formula).startswith("C") else "" for d in ds],
        "x": [float(d.centre_px[0]) * p for d in ds],
        "y": [float(d.centre_px[1]) * p for d in ds],
        "kind": [str(d.kind) for d in ds],
        "formula": [str(d.formula) for d in ds],
        "motif": [str(d.motif) for d in ds],
        "n": [int(len(d.members)) for d in ds],
    }


def display_frame(result: FrameResult, idx: int, max_update_bytes: int = 1_000_000) -> DisplayFrame:
    """Convert one result into what the dashboard keeps and sends, inside ``max_update_bytes``.

    The atoms always go; bonds are dropped when atoms + bonds alone exceed the budget; the image is
    binned by the smallest integer factor that fits what is left (at least 64 KiB for the image).
    """
    atoms = atom_columns(result)
    n_atoms = atoms["x"].shape[0]
    budget = int(max_update_bytes) - JSON_OVERHEAD_BYTES - n_atoms * ATOM_BYTES
    bonds = bond_columns(result)
    n_bonds = bonds["x0"].shape[0]
    if n_bonds * BOND_BYTES > budget - 65536:
        bonds = None
    else:
        budget -= n_bonds * BOND_BYTES
    image, rng, f = None, (0.0, 1.0), 1
    if result.image is not None:
        f = choose_bin_factor(np.shape(result.image), max(budget, 65536))
        image, rng = to_uint8(result.image, f)
        image = dim_outside(image, _analysed_mask(result), f)
    species = atoms["sp"]
    si = (species == SI) & (atoms["tid"] >= 0)
    return DisplayFrame(
        idx=idx, series=str(result.series), seq=int(result.seq), t_acquired=float(result.t_acquired),
        t_done=float(result.t_done or 0.0), t_shown_ready=time.time(),
        pixel_size_A=float(result.pixel_size_A), frame_shape=tuple(int(v) for v in result.frame_shape),
        image=image, bin_factor=f, intensity_range=rng, atoms=atoms, bonds=bonds,
        defects=defect_columns(result), events=list(result.events or []),
        drift_px=tuple(float(v) for v in result.drift_px), timings_s=dict(result.timings_s or {}),
        si_track=atoms["tid"][si].copy(), si_coord=atoms["coord"][si].copy(),
        error=getattr(result, "error", None),
        material=_material(result),
    )


#: Pixels outside the analysed graphene region are shown at this fraction of their brightness.
DIM_OUTSIDE = 0.35


def _analysed_mask(result: FrameResult):
    """The graphene mask the pipeline applied (frame-shaped bool), or None (whole field analysed:
    the verdict gives a mask only for a partly graphene field)."""
    mat = getattr(result, "material", None)
    mask = getattr(mat, "mask", None)
    if mask is None or not mat.is_graphene or not float(mat.graphene_fraction) < 1.0:
        return None
    return mask


def dim_outside(image: np.ndarray, mask, f: int) -> np.ndarray:
    """``image`` (uint8, the frame binned by ``f``) dimmed where ``mask`` (frame-shaped) is False:
    the part of the field that was not analysed (not graphene) is shown darker."""
    if mask is None:
        return image
    h, w = image.shape
    m = np.asarray(mask, bool)[: h * f: f, : w * f: f][:h, :w]
    if m.shape != image.shape or m.all():
        return image
    out = image.copy()
    out[~m] = (out[~m] * DIM_OUTSIDE).astype(np.uint8)
    return out


def _material(result: FrameResult):
    mat = getattr(result, "material", None)
    if mat is None:
        return None
    return (str(mat.verdict), str(mat.reason), float(mat.graphene_fraction))


def image_columns(df: DisplayFrame) -> dict:
    """The image source's data dict (one image) for frame ``df``; an empty image when none."""
    p = df.pixel_size_A
    W_A, H_A = df.field_A
    img = df.image if df.image is not None else np.zeros((1, 1), np.uint8)
    return {"image": [img], "x": [-0.5 * p], "y": [-0.5 * p], "dw": [W_A], "dh": [H_A],
            "seq": [df.seq], "idx": [df.idx]}


def highlight_columns(df: DisplayFrame, events: list) -> dict:
    """Rings around the atoms involved in ``events`` in frame ``df``: the event's track and the
    members of the defect that track belongs to (if any); falls back to the event position."""
    a = df.atoms
    xs, ys, labels, radii = [], [], [], []
    for ev in events:
        hit = np.flatnonzero(a["tid"] == int(ev.atom_id)) if int(ev.atom_id) >= 0 else np.zeros(0, int)
        if hit.size:
            d = int(a["defect"][hit[0]])
            members = np.flatnonzero(a["defect"] == d) if d >= 0 else hit
            members = np.union1d(members, hit)
        else:
            members = np.zeros(0, int)
        if members.size:
            xs.extend(a["x"][members].tolist())
            ys.extend(a["y"][members].tolist())
            labels.extend([""] * members.size)
            radii.extend([0.5] * members.size)
        # the event position itself, labelled
        xs.append(float(ev.x_A) if ev.x_A or ev.y_A else float(ev.x) * df.pixel_size_A)
        ys.append(float(ev.y_A) if ev.x_A or ev.y_A else float(ev.y) * df.pixel_size_A)
        labels.append(f"{event_label(ev.kind)} #{ev.atom_id}")
        radii.append(2.4)
    r = np.asarray(radii, float)
    x = np.asarray(xs, float)
    right = x > 0.55 * df.field_A[0]          # label on the side with more room
    return {"x": xs, "y": ys, "label": labels, "r": radii,
            "lx": np.where(right, x - 0.8 * r, x + 0.8 * r).tolist(),
            "ly": (np.asarray(ys, float) - 0.8 * r).tolist(),
            "align": np.where(right, "right", "left").tolist()}


@dataclass
class EventRow:
    """An event in the dashboard's log, with where its frame lives in the history."""

    key: int                 # running number of the event in this dashboard (1, 2, ...)
    idx: int                 # history index of the frame that carried it
    series: str
    event: Event
    t_seen: float            # Unix seconds when the dashboard received it
    gallery_png: bytes | None = None   # before/after crops (dashboard.gallery), transformations only


def event_table_columns(rows: list[EventRow]) -> dict:
    """The event log table's data dict, newest first."""
    rows = sorted(rows, key=lambda r: -r.key)
    ev = [r.event for r in rows]
    return {
        "key": [r.key for r in rows],
        "series": [str(r.series) for r in rows],
        "category": [getattr(r.event, "category", "") for r in rows],
        "idx": [r.idx for r in rows],
        "frame": [int(e.frame) for e in ev],
        "time": [time.strftime("%H:%M:%S", time.localtime(e.t_acquired)) + f".{int(e.t_acquired % 1 * 10)}"
                 for e in ev],
        "kind": [event_label(e.kind) for e in ev],
        "track": [int(e.atom_id) for e in ev],
        "change": [f"{e.before} → {e.after}" for e in ev],
        "where": [f"({e.x_A:.1f}, {e.y_A:.1f})" for e in ev],
        "conf": [round(float(e.confidence), 2) for e in ev],
        "latency": [round(float(e.latency_s), 2) for e in ev],
    }


def banner_html(row: EventRow | None, n_events: int, now: float, flash: bool,
                earlier: list[EventRow] | None = None) -> str:
    """The alert banner's HTML: the newest event (flashing when new) or a calm 'watching' line.

    ``earlier``: other recent events (newest first), listed on a second line so that an event
    followed quickly by another is not lost from view.
    """
    if row is None:
        return ('<div class="banner calm">No transformation yet · watching the dopants '
                '<span class="muted">(events appear here the moment they are confirmed)</span></div>')
    e = row.event
    age = max(0.0, now - row.t_seen)
    cls = f"banner alert {'flash' + str(row.key % 2) if flash else 'steady'}"
    more = ""
    if earlier:
        items = [f"{event_label(r.event.kind)} #{r.event.atom_id} (frame {r.event.frame}, "
                 f"{max(0.0, now - r.t_seen):.0f} s ago)" for r in earlier]
        more = f'<div class="muted">also: {" · ".join(items)}</div>'
    return (f'<div class="{cls}"><b>⚠ {event_label(e.kind)}</b> · Si track #{e.atom_id} · '
            f'{e.before} → {e.after} · frame {e.frame} · at ({e.x_A:.1f}, {e.y_A:.1f}) Å · '
            f'confidence {e.confidence:.2f} <span class="muted">· {age:.0f} s ago · '
            f'{n_events} event{"s" if n_events != 1 else ""} so far · click a row below to see it</span>'
            f'{more}</div>')


def species_name(code: int) -> str:
    return SPECIES[code] if 0 <= code < len(SPECIES) else "?"
