"""Training data: simulator frames -> model-grid images + per-pixel labels, with augmentation.

One *bank* example = one simulated frame (``engine.sim.make_training_example``) resampled to the
model grid exactly as at inference (:class:`engine.infer.preprocess.Resampler`), stored raw (not
normalised) with its atoms in grid pixels. Training crops are drawn from the bank with geometric
and photometric augmentation (:func:`augment_crop`), then normalised by the inference recipe and
rasterised into labels (:func:`rasterise_labels`).

Labels (``CLASSES`` order): 0 background, 1 C, 2 Si. Each atom is a disc of radius
``label_radius_A`` (0.4 A) at its position. Atoms heavier than Si (the simulator's "other"
species: adatoms) are labelled in the Si channel, which therefore means "an atom heavier than C";
the chemistry stage separates Si from heavier species by raw intensity. Amorphous contamination
(the simulator's non-lattice light atoms, overlapping in projection, not resolvable as atoms) is
*ignored* (label -1, no loss) within ``IGNORE_RADIUS_A`` of any of its atoms, lattice atoms
under it included: the network is taught neither to invent atoms there nor to suppress them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from engine.infer.preprocess import NORMALISATION, Resampler, normalise
from engine.sim.sample import contamination_mask
from lab.radii import CONTAMINATION_IGNORE_A

#: Species code of the simulator -> label class (0 C -> 1, 1 Si -> 2, 2 other heavy -> 2).
SPECIES_TO_CLASS = np.array([1, 2, 2], dtype=np.int64)
#: Pixels this close (A) to a contamination atom are ignored by the loss.
IGNORE_RADIUS_A = CONTAMINATION_IGNORE_A          # lab/radii.py: the same region is left out of scoring
IGNORE = -1


@dataclass
class BankItem:
    """One simulated frame on the model grid."""

    image: np.ndarray        # (h, w) float32, raw intensities resampled to the grid
    xy: np.ndarray           # (N, 2) float64 atom positions (x=col, y=row) in grid px
    cls: np.ndarray          # (N,) int64 label class per atom (1 C, 2 Si/heavy)
    grid_px_A: float
    dose: float              # e/A^2 if the simulator reported it, else nan
    ignore_xy: np.ndarray | None = None   # (M, 2) contamination atoms (grid px): loss ignored near them
    #: :func:`hole_zone` at its default radii, filled on first use (a bank item is drawn many times)
    zone: np.ndarray | None = field(default=None, repr=False, compare=False)


def frame_to_grid(image: np.ndarray, xy_px: np.ndarray, frame_px_A: float, model_px_A: float):
    """Resample a frame and its atom positions to the model grid. Returns (grid, xy_grid, grid_px_A)."""
    r = Resampler(image.shape, frame_px_A, model_px_A)
    g = r(image)
    H, W = r.frame_shape
    h, w = r.grid_shape
    scale = np.array([w / W, h / H])
    xy = (np.asarray(xy_px, np.float64).reshape(-1, 2) + 0.5) * scale - 0.5
    return g, xy, r.grid_px_A


def make_bank_item(rng: np.random.Generator, model_px_A: float, grid_side_px: int = 192,
                   pixel_size_range_A: tuple[float, float] = (0.05, 0.2), **sim_overrides) -> BankItem:
    """Simulate one frame covering ``grid_side_px`` model pixels at a random frame pixel size."""
    from engine.sim import make_training_example

    lo, hi = pixel_size_range_A
    frame_px = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    n = int(math.ceil(grid_side_px * model_px_A / frame_px))
    ex = make_training_example(rng, shape_px=(n, n), pixel_size_A=frame_px, **sim_overrides)
    g, xy, gpx = frame_to_grid(ex.image, ex.xy_px, ex.pixel_size_A, model_px_A)
    species = np.asarray(ex.species, dtype=np.int64)
    contam = contamination_mask(species, getattr(ex, "lattice", None))
    imaging = (getattr(ex, "params", {}) or {}).get("imaging", {})
    dose = float(imaging.get("dose_e_per_A2", float("nan")))
    return BankItem(g.astype(np.float32), xy[~contam], SPECIES_TO_CLASS[np.clip(species[~contam], 0, 2)], gpx, dose,
                    xy[contam] if contam.any() else None)


def rasterise_labels(shape: tuple[int, int], xy: np.ndarray, cls: np.ndarray, radius_px: float,
                     ignore_xy: np.ndarray | None = None, ignore_radius_px: float = 0.0) -> np.ndarray:
    """Per-pixel class map (int64) with a disc of ``radius_px`` per atom (Si/heavy drawn last so a
    heavy atom is never hidden by a neighbour's disc); ``IGNORE`` (-1) within ``ignore_radius_px``
    of every ``ignore_xy`` point."""
    h, w = shape
    lab = np.zeros((h, w), np.int64)
    _discs(lab, xy, cls, radius_px)
    if ignore_xy is not None and len(ignore_xy):
        _discs(lab, ignore_xy, np.full(len(ignore_xy), IGNORE), ignore_radius_px)
    return lab


def _discs(lab: np.ndarray, xy: np.ndarray, cls: np.ndarray, radius_px: float) -> None:
    h, w = lab.shape
    if len(xy) == 0:
        return
    r = int(math.ceil(radius_px))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    order = np.argsort(cls, kind="stable")
    xy, cls = np.asarray(xy, np.float64)[order], np.asarray(cls)[order]
    cx, cy = np.rint(xy[:, 0]).astype(np.int64), np.rint(xy[:, 1]).astype(np.int64)
    px = cx[:, None, None] + dx[None]
    py = cy[:, None, None] + dy[None]
    d2 = (px - xy[:, 0, None, None]) ** 2 + (py - xy[:, 1, None, None]) ** 2
    inside = (d2 <= radius_px ** 2) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    lab[py[inside], px[inside]] = np.broadcast_to(cls[:, None, None], inside.shape)[inside]


def _smooth_field(rng, shape, scale_px):
    """Random smooth field in [-1, 1] with correlation length ~scale_px."""
    h, w = shape
    f = rng.standard_normal((max(2, h // 8), max(2, w // 8)))
    f = ndimage.gaussian_filter(f, max(0.5, scale_px / 8.0), mode="wrap")
    f = ndimage.zoom(f, (h / f.shape[0], w / f.shape[1]), order=1)[:h, :w]
    f = f - f.mean()
    m = np.abs(f).max()
    return f / m if m > 0 else f


def photometric(rng: np.random.Generator, x: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Photometric augmentation of a raw model-grid image (before normalisation).

    Gaussian blur (sigma 0.3-1.2 px), detector gamma (0.6-1.6), smooth background (up to 60 % of the
    lattice contrast: linear gradient + blobs), per-row offsets (flyback / line noise), extra
    Gaussian read noise, hot/dead pixels, and a random gain/offset that the normalisation must cancel.
    """
    s = strength
    x = np.asarray(x, np.float32).copy()
    h, w = x.shape

    def span_of(a):
        lo, hi = np.percentile(a[::2, ::2], [1, 99])
        return max(float(hi - lo), 1e-6)

    span = span_of(x)
    if rng.random() < 0.35 * s:
        x = ndimage.gaussian_filter(x, rng.uniform(0.3, 1.2))
    if rng.random() < 0.3 * s:
        m = float(x.min())
        base = x - m
        top = max(float(base.max()), 1e-6)
        g = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        x = ((base / top) ** g * top + m).astype(np.float32)
        span = span_of(x)
    if rng.random() < 0.4 * s:
        amp = rng.uniform(0.05, 0.6) * span
        yy, xx = np.mgrid[0:h, 0:w]
        ang = rng.uniform(0, 2 * np.pi)
        grad = (np.cos(ang) * xx + np.sin(ang) * yy) / max(h, w)
        field = 0.5 * (grad - grad.mean()) + 0.5 * _smooth_field(rng, x.shape, rng.uniform(10, 60))
        x = x + (amp * field).astype(np.float32)
    if rng.random() < 0.2 * s:
        x = x + rng.normal(0, rng.uniform(0.02, 0.15) * span, h)[:, None].astype(np.float32)
    if rng.random() < 0.25 * s:
        x = x + rng.normal(0, rng.uniform(0.02, 0.2) * span, x.shape).astype(np.float32)
    if rng.random() < 0.1 * s:
        n = int(rng.integers(1, 6))
        iy, ix = rng.integers(0, h, n), rng.integers(0, w, n)
        x[iy, ix] = np.where(rng.random(n) < 0.5, x.min(), x.max() + span)
    return (x * float(np.exp(rng.uniform(-3, 3))) + float(rng.uniform(-2, 2) * span)).astype(np.float32)


def augment_crop(rng: np.random.Generator, item: BankItem, crop_px: int, strength: float = 1.0,
                 return_ignore: bool = False, extra: np.ndarray | None = None):
    """A normalised, augmented random crop of ``item``: ``(x float32 (c, c), xy, cls)``.

    Photometric augmentation and the inference normalisation act on the whole bank image (as the
    live path normalises whole frames); then a random crop with a random 90-degree rotation and
    flip (labels follow). ``extra``: an optional array of the bank image's shape (e.g. :func:`hole_zone`)
    cropped, rotated and flipped with it and returned last; it draws no random numbers.
    """
    x = normalise(photometric(rng, item.image, strength), NORMALISATION)
    h, w = x.shape
    if h < crop_px or w < crop_px:
        pad = ((0, max(0, crop_px - h)), (0, max(0, crop_px - w)))
        x = np.pad(x, pad, mode="reflect")
        if extra is not None:
            extra = np.pad(extra, pad, mode="reflect")
        h, w = x.shape
    y0 = int(rng.integers(0, h - crop_px + 1))
    x0 = int(rng.integers(0, w - crop_px + 1))
    x = x[y0:y0 + crop_px, x0:x0 + crop_px]
    if extra is not None:
        extra = extra[y0:y0 + crop_px, x0:x0 + crop_px]
    off = np.array([x0, y0], np.float64)
    xy = item.xy - off
    keep = (xy[:, 0] > -3) & (xy[:, 0] < crop_px + 2) & (xy[:, 1] > -3) & (xy[:, 1] < crop_px + 2)
    xy, cls = xy[keep], item.cls[keep]
    ign = np.zeros((0, 2)) if item.ignore_xy is None else item.ignore_xy - off
    c = (crop_px - 1) / 2.0
    for _ in range(int(rng.integers(0, 4))):   # np.rot90: new[i, j] = old[j, n-1-i]
        x = np.rot90(x)
        if extra is not None:
            extra = np.rot90(extra)
        xy = np.stack([xy[:, 1], 2 * c - xy[:, 0]], axis=1)
        ign = np.stack([ign[:, 1], 2 * c - ign[:, 0]], axis=1)
    if rng.random() < 0.5:
        x = x[:, ::-1]
        if extra is not None:
            extra = extra[:, ::-1]
        xy = np.stack([2 * c - xy[:, 0], xy[:, 1]], axis=1)
        ign = np.stack([2 * c - ign[:, 0], ign[:, 1]], axis=1)
    out = (np.ascontiguousarray(x, dtype=np.float32), xy, cls) + ((ign,) if return_ignore else ())
    if extra is not None:
        out += (np.ascontiguousarray(extra),)
    return out


#: hole zone of the loss weighting (``--hole-weight``): as lab.infer.holes scores it, the points farther
#: than HOLE_CORE_A from every atom (the hole) grown by HOLE_ZONE_A (the band inside the rim where a
#: continued lattice sits, and the rim atoms)
HOLE_CORE_A = 2.0
HOLE_ZONE_A = 2.5
MIN_CORE_A2 = 0.5


def hole_zone(item: BankItem, core_A: float = HOLE_CORE_A, zone_A: float = HOLE_ZONE_A) -> np.ndarray:
    """(h, w) bool on the item's grid: the hole zone (all False without a hole). Every atom counts (lattice
    and contamination); the truth holds atoms up to 3 A outside the frame, so the frame edge makes no hole.
    At the default radii cached on the item (``item.zone``)."""
    default = (core_A, zone_A) == (HOLE_CORE_A, HOLE_ZONE_A)
    if default and item.zone is not None:
        return item.zone
    h, w = item.image.shape
    pts = [np.asarray(item.xy, np.float64).reshape(-1, 2)]
    if item.ignore_xy is not None and len(item.ignore_xy):
        pts.append(np.asarray(item.ignore_xy, np.float64).reshape(-1, 2))
    pts = np.concatenate(pts)
    if not len(pts):
        zone = np.ones((h, w), bool)
    else:
        from scipy.spatial import cKDTree

        yy, xx = np.mgrid[0:h, 0:w]
        d, _ = cKDTree(pts).query(np.c_[xx.ravel(), yy.ravel()], distance_upper_bound=core_A / item.grid_px_A)
        core = ~np.isfinite(d).reshape(h, w)
        if core.any():      # specks below 0.5 A^2 (a vacancy complex grazing 2 A) are no hole (lab.infer.holes)
            lab, n = ndimage.label(core)
            area = ndimage.sum_labels(core, lab, np.arange(1, n + 1)) * item.grid_px_A ** 2
            core = np.isin(lab, 1 + np.flatnonzero(area >= MIN_CORE_A2))
        zone = ndimage.distance_transform_edt(~core) <= zone_A / item.grid_px_A if core.any() else core
    if default:
        item.zone = zone
    return zone


def make_batch(rng: np.random.Generator, bank: list[BankItem], batch: int, crop_px: int, label_radius_px: float,
               strength: float = 1.0, with_zone: bool = False, ignore_contamination: bool = True):
    """A training batch: ``(x float32 (B,1,c,c) normalised, labels int64 (B,c,c))``; with ``with_zone``
    also the crops' :func:`hole_zone` masks (bool (B,c,c)), same random draws. ``ignore_contamination``
    False: no pixel is ignored; the contamination's atoms are background and the lattice atoms under them
    keep their discs (same random draws)."""
    xs = np.empty((batch, 1, crop_px, crop_px), np.float32)
    ys = np.empty((batch, crop_px, crop_px), np.int64)
    zs = np.zeros((batch, crop_px, crop_px), bool) if with_zone else None
    for b in range(batch):
        item = bank[int(rng.integers(0, len(bank)))]
        if with_zone:
            xs[b, 0], xy, cls, ign, zs[b] = augment_crop(rng, item, crop_px, strength, return_ignore=True,
                                                         extra=hole_zone(item))
        else:
            xs[b, 0], xy, cls, ign = augment_crop(rng, item, crop_px, strength, return_ignore=True)
        ys[b] = rasterise_labels((crop_px, crop_px), xy, cls, label_radius_px,
                                 ign if ignore_contamination else None, IGNORE_RADIUS_A / item.grid_px_A)
    return (xs, ys, zs) if with_zone else (xs, ys)
