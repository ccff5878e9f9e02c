"""The one gallery renderer: an event's before/after crops (:class:`engine.gallery.GalleryItem`, cut by
:mod:`engine.gallery`) drawn as one picture, with the atoms and bonds.

Used by the dashboard (the panel shown when an event is clicked), ``stemwatch analyze --gallery``
(:class:`GalleryWriter`, ``gallery/<file_name(event)>`` PNGs) and the session report
(:mod:`dashboard.report`, PNGs embedded as data URLs).

:func:`render` gives an RGB uint8 array: the crop from the frame *before* the change (the last frame
before the event's ``first_frame``) on the left, the crop from the frame that confirmed it on the
right, each ``CROP_A`` wide around the event's spot, upscaled, atoms coloured as on the dashboard
(3-fold Si red, 4-fold Si yellow, C cyan, ...; :func:`dashboard.render.atom_category`), bonds as
lines, the event atom ringed, a caption. :func:`png_bytes` encodes any grey or RGB image.

Drawing uses Pillow's ImageDraw (Pillow comes with Bokeh; a loop over the few dozen atoms of a crop,
never the hot path).
"""

from __future__ import annotations

import io

import numpy as np

from dashboard.render import ATOM_COLORS, DisplayFrame, atom_category, event_label, map_uint8, robust_range
from engine.gallery import CROP_A, GalleryFrame, GalleryItem, Panel, before_frame, gallery_item, species_names
from engine.types import SPECIES

__all__ = ["CROP_A", "CROP_PX", "CAPTION_PX", "GAP_PX", "available", "render", "png_bytes", "file_name",
           "from_display", "item_from_display", "before_frame", "GalleryWriter"]

#: output pixels per crop side
CROP_PX = 256
#: caption strip height (px)
CAPTION_PX = 22
GAP_PX = 6


def available() -> bool:
    """Whether Pillow is installed (it comes with Bokeh; ``pip install stemwatch[gallery]`` names it)."""
    import importlib.util
    return importlib.util.find_spec("PIL") is not None


def _hex(c: str) -> tuple[int, int, int]:
    c = c.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _grey(p: Panel) -> np.ndarray:
    lo, hi = robust_range(p.image) if p.value_range is None else p.value_range
    return map_uint8(p.image, lo, hi)


def _species_codes(names) -> np.ndarray:
    code = {s: k for k, s in enumerate(SPECIES)}
    return np.asarray([code.get(str(s), len(SPECIES) - 1) for s in np.asarray(names, object).reshape(-1)], np.int64)


def draw_panel(p: Panel, out_px: int = CROP_PX, title: str = ""):
    """One panel as a PIL RGB image ``out_px`` square, centred on the panel's event spot (ringed)."""
    from PIL import Image, ImageDraw

    s = out_px / p.size_A                                     # output px per A
    k = s * p.step_A                                          # output px per crop px
    half = p.size_A / 2.0 / p.step_A                          # half the side, crop px
    cx, cy = (float(v) for v in p.centre)
    grey = _grey(p)
    # output pixel centres -> crop pixel indices (nearest)
    u = (np.arange(out_px) + 0.5) / k - half
    cols = np.floor(cx + u + 0.5).astype(np.int64)
    rows = np.floor(cy + u + 0.5).astype(np.int64)
    h, w = grey.shape
    okc, okr = (cols >= 0) & (cols < w), (rows >= 0) & (rows < h)
    sub = grey[np.clip(rows, 0, h - 1)][:, np.clip(cols, 0, w - 1)]
    img = Image.fromarray(np.where(okr[:, None] & okc[None, :], sub, 0).astype(np.uint8), "L").convert("RGB")
    draw = ImageDraw.Draw(img)

    def to_px(x, y):
        return (np.asarray(x) - (cx - half)) * k, (np.asarray(y) - (cy - half)) * k

    b = np.asarray(p.bonds, np.float64).reshape(-1, 4)
    x0, y0 = to_px(b[:, 0], b[:, 1])
    x1, y1 = to_px(b[:, 2], b[:, 3])
    for a0, b0, a1, b1 in zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist()):
        draw.line((a0, b0, a1, b1), fill=(178, 235, 242), width=2)
    xy = np.asarray(p.xy, np.float64).reshape(-1, 2)
    if len(xy):
        px, py = to_px(xy[:, 0], xy[:, 1])
        cats = atom_category(_species_codes(p.species), np.asarray(p.coordination), np.asarray(p.edge, bool))
        for x, y, c in zip(px.tolist(), py.tolist(), cats.tolist()):
            r = 0.22 * s if c in (2, 3, 4, 5) else 0.13 * s     # dopants drawn large
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_hex(ATOM_COLORS[int(c)]), outline=(0, 0, 0))
    rx, ry = to_px(cx, cy)
    draw.ellipse((float(rx) - s, float(ry) - s, float(rx) + s, float(ry) + s), outline=(255, 23, 68), width=2)
    if title:
        draw.rectangle((0, 0, out_px, 16), fill=(0, 0, 0))
        draw.text((4, 2), title, fill=(255, 255, 255))
    # scale bar: 5 A
    draw.rectangle((out_px - 10 - 5 * s, out_px - 12, out_px - 10, out_px - 8), fill=(255, 255, 255))
    return img


def caption(event: dict) -> str:
    """The picture's caption line (latin-1: the default bitmap font)."""
    cap = (f"{event_label(str(event['kind']))} · track #{event['atom_id']} · {event['before']} -> "
           f"{event['after']} · ({float(event['x_A']):.1f}, {float(event['y_A']):.1f}) A")
    return cap.replace("→", "->").encode("latin-1", "replace").decode("latin-1")


def render(item: GalleryItem) -> np.ndarray:
    """The side-by-side picture (H, W, 3) uint8 of a gallery item."""
    from PIL import Image, ImageDraw

    panels = []
    for p, label in ((item.before, "before"), (item.after, "after")):
        if p is None:
            im = Image.new("RGB", (CROP_PX, CROP_PX), (38, 50, 56))
            ImageDraw.Draw(im).text((8, CROP_PX // 2), "no earlier frame kept", fill=(200, 200, 200))
            panels.append(im)
        else:
            panels.append(draw_panel(p, title=f"{label} - frame {p.seq}"))
    out = Image.new("RGB", (2 * CROP_PX + GAP_PX, CROP_PX + CAPTION_PX), (38, 50, 56))
    out.paste(panels[0], (0, CAPTION_PX))
    out.paste(panels[1], (CROP_PX + GAP_PX, CAPTION_PX))
    ImageDraw.Draw(out).text((4, 5), caption(item.event), fill=(255, 255, 255))
    return np.asarray(out)


def png_bytes(img: np.ndarray, compress_level: int = 6) -> bytes:
    """A uint8 grey (H, W) or RGB (H, W, 3) image as PNG bytes."""
    from PIL import Image

    a = np.ascontiguousarray(img, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, "RGB" if a.ndim == 3 else "L").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def file_name(event) -> str:
    """The gallery file of an event: ``f{frame:06d}_{kind}_t{atom_id}.png`` (unique per event)."""
    return f"f{int(event.frame):06d}_{event.kind}_t{int(event.atom_id)}.png"


def from_display(df: DisplayFrame) -> GalleryFrame:
    """The :class:`engine.gallery.GalleryFrame` of a dashboard DisplayFrame (its uint8 image, binned;
    the edge flag is the "C at edge" category, the only place the display uses it)."""
    a = df.atoms
    b = df.bonds
    bonds = (np.stack([b["x0"], b["y0"], b["x1"], b["y1"]], axis=1).astype(np.float64) if b is not None
             else np.zeros((0, 4)))
    return GalleryFrame(seq=int(df.seq), series=df.series, image=df.image, step_A=df.pixel_size_A * df.bin_factor,
                        xy_A=np.stack([a["x"], a["y"]], axis=1).astype(np.float64), species=species_names(a["sp"]),
                        coordination=np.asarray(a["coord"]), edge=np.asarray(a["cat"]) == 6,
                        track=np.asarray(a["tid"], np.int64), bonds_A=bonds,
                        drift_A=tuple(float(v) * df.pixel_size_A for v in df.drift_px), value_range=(0.0, 255.0))


def item_from_display(event, before: DisplayFrame | None, after: DisplayFrame, frames=()) -> GalleryItem:
    """The gallery item of ``event`` from the dashboard's DisplayFrames (``frames``: those between)."""
    return gallery_item(event, from_display(before) if before is not None else None, from_display(after),
                        [from_display(f) for f in frames])


class GalleryWriter:
    """Writes ``gallery/<file_name(event)>`` next to events.jsonl for every transformation event.

    ``write(result)`` takes every FrameResult in order (with ``image`` set); it keeps the last
    ``keep`` frames (as :class:`engine.gallery.GalleryFrame`) to find each event's frame before.
    """

    def __init__(self, out_dir, keep: int = 24, bookkeeping: bool = False):
        import collections
        from pathlib import Path

        if not available():
            raise ImportError("the gallery needs Pillow: pip install 'stemwatch[gallery]'")
        self.dir = Path(out_dir) / "gallery"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.frames: collections.deque = collections.deque(maxlen=keep)
        self.bookkeeping = bookkeeping
        self.written: list[str] = []

    def write(self, result) -> list[str]:
        from dashboard.render import display_frame
        from engine.track.categories import BOOKKEEPING

        # the frame as the dashboard keeps it (grey levels, float32 angstrom), at full resolution:
        # the file is the picture the dashboard shows
        gf = from_display(display_frame(result, 0, max_update_bytes=1 << 40))
        names = []
        for e in result.events:
            if getattr(e, "category", "") == BOOKKEEPING and not self.bookkeeping:
                continue
            name = file_name(e)
            item = gallery_item(e, before_frame(self.frames, e, result.series), gf, self.frames)
            (self.dir / name).write_bytes(png_bytes(render(item)))
            names.append(name)
        self.frames.append(gf)
        self.written += names
        return names
