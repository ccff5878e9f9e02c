"""Before / after crops around an event, with the atoms and bonds drawn: the dashboard's gallery and
``stemwatch analyze --gallery`` (the same function draws both, from the same plain data).

Input is a :class:`dashboard.render.DisplayFrame` (the uint8 frame, atoms in angstrom with their
category = species and coordination, bonds as segments in angstrom); ``analyze`` makes one from each
FrameResult with :func:`dashboard.render.display_frame`, the dashboard already keeps them. Output is
an RGB uint8 array: the crop from the frame *before* the change (the last frame before the event's
``first_frame``) on the left, the crop from the frame that confirmed it on the right, each
``CROP_A`` wide around the event's position, upscaled, atoms coloured as on the dashboard (3-fold
Si red, 4-fold Si yellow, C cyan, ...), bonds as lines, the event atom ringed, and a caption.
:func:`png_bytes` encodes it with Pillow (the ``gallery`` extra).

Drawing uses Pillow's ImageDraw (a loop over the few dozen atoms of a crop; never the hot path).
"""

from __future__ import annotations

import io

import numpy as np

from dashboard.render import ATOM_COLORS, DisplayFrame, event_label

#: crop width and height (A) around the event
CROP_A = 16.0
#: output pixels per crop side
CROP_PX = 256
#: caption strip height (px)
CAPTION_PX = 22
GAP_PX = 6


def available() -> bool:
    """Whether Pillow is installed (``pip install stemwatch[gallery]``)."""
    import importlib.util
    return importlib.util.find_spec("PIL") is not None


def _hex(c: str) -> tuple[int, int, int]:
    c = c.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def crop(df: DisplayFrame, centre_A: tuple[float, float], size_A: float = CROP_A, out_px: int = CROP_PX,
         ring_A: tuple[float, float] | None = None, title: str = ""):
    """One crop of ``df`` centred on ``centre_A`` (x, y in A): a PIL RGB image ``out_px`` square."""
    from PIL import Image, ImageDraw

    cx, cy = (float(v) for v in centre_A)
    half = size_A / 2.0
    s = out_px / size_A                                        # output px per A
    canvas = np.zeros((out_px, out_px), np.uint8)
    if df.image is not None and df.image.size > 1:
        step = df.pixel_size_A * df.bin_factor                 # A per image pixel
        # output pixel centres -> image pixel indices (nearest): the same geometry as the dashboard
        u = (np.arange(out_px) + 0.5) / s
        cols = np.floor((cx - half + u) / step + 0.5).astype(np.int64)
        rows = np.floor((cy - half + u) / step + 0.5).astype(np.int64)
        h, w = df.image.shape
        okc = (cols >= 0) & (cols < w)
        okr = (rows >= 0) & (rows < h)
        sub = df.image[np.clip(rows, 0, h - 1)][:, np.clip(cols, 0, w - 1)]
        canvas = np.where(okr[:, None] & okc[None, :], sub, 0).astype(np.uint8)
    img = Image.fromarray(canvas, "L").convert("RGB")
    draw = ImageDraw.Draw(img)

    def to_px(x, y):
        return (np.asarray(x) - (cx - half)) * s, (np.asarray(y) - (cy - half)) * s

    if df.bonds is not None and len(df.bonds["x0"]):
        b = df.bonds
        near = ((np.abs(b["x0"] - cx) < half + 2) & (np.abs(b["y0"] - cy) < half + 2))
        x0, y0 = to_px(b["x0"][near], b["y0"][near])
        x1, y1 = to_px(b["x1"][near], b["y1"][near])
        for a0, b0, a1, b1 in zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist()):
            draw.line((a0, b0, a1, b1), fill=(178, 235, 242), width=2)
    a = df.atoms
    if len(a["x"]):
        near = (np.abs(a["x"] - cx) < half + 1) & (np.abs(a["y"] - cy) < half + 1)
        px, py = to_px(a["x"][near], a["y"][near])
        cats = np.asarray(a["cat"])[near]
        for x, y, c in zip(px.tolist(), py.tolist(), cats.tolist()):
            r = 0.22 * s if c in (2, 3, 4, 5) else 0.13 * s     # dopants drawn large
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_hex(ATOM_COLORS[int(c)]), outline=(0, 0, 0))
    if ring_A is not None:
        rx, ry = to_px(ring_A[0], ring_A[1])
        r = 1.0 * s
        draw.ellipse((float(rx) - r, float(ry) - r, float(rx) + r, float(ry) + r), outline=(255, 23, 68), width=2)
    if title:
        draw.rectangle((0, 0, out_px, 16), fill=(0, 0, 0))
        draw.text((4, 2), title, fill=(255, 255, 255))
    # scale bar: 5 A
    draw.rectangle((out_px - 10 - 5 * s, out_px - 12, out_px - 10, out_px - 8), fill=(255, 255, 255))
    return img


def centre_in(df: DisplayFrame, event, frames=(), after: DisplayFrame | None = None) -> tuple[float, float]:
    """Where the event's spot of the sample is in frame ``df`` (the field drifts between frames): the
    event atom's track there if it exists, else the event position moved back by the drift of the
    frames after ``df`` up to ``after`` (``frames``: DisplayFrames, oldest first)."""
    a = df.atoms
    hit = np.flatnonzero(np.asarray(a["tid"]) == int(event.atom_id)) if int(event.atom_id) >= 0 else []
    if len(hit):
        return float(a["x"][hit[0]]), float(a["y"][hit[0]])
    shift = np.zeros(2)
    for f in list(frames) + ([after] if after is not None else []):
        if f is not None and df.seq < f.seq <= int(event.frame) and f.series == df.series:
            shift += np.asarray(f.drift_px, float) * f.pixel_size_A
    return float(event.x_A - shift[0]), float(event.y_A - shift[1])


def before_after(before: DisplayFrame | None, after: DisplayFrame, event, frames=()) -> np.ndarray:
    """The side-by-side picture (H, W, 3) uint8 for ``event`` (an :class:`engine.types.Event`);
    ``frames``: the DisplayFrames between (for the drift when the event atom is not in ``before``)."""
    from PIL import Image, ImageDraw

    centre = (float(event.x_A), float(event.y_A))
    panels = []
    for df, label in ((before, "before"), (after, "after")):
        if df is None:
            im = Image.new("RGB", (CROP_PX, CROP_PX), (38, 50, 56))
            ImageDraw.Draw(im).text((8, CROP_PX // 2), "no earlier frame kept", fill=(200, 200, 200))
            panels.append(im)
            continue
        c = centre if df is after else centre_in(df, event, frames, after)
        panels.append(crop(df, c, ring_A=c, title=f"{label} - frame {df.seq}"))
    out = Image.new("RGB", (2 * CROP_PX + GAP_PX, CROP_PX + CAPTION_PX), (38, 50, 56))
    out.paste(panels[0], (0, CAPTION_PX))
    out.paste(panels[1], (CROP_PX + GAP_PX, CAPTION_PX))
    cap = (f"{event_label(event.kind)} · track #{event.atom_id} · {event.before} -> {event.after} · "
           f"({event.x_A:.1f}, {event.y_A:.1f}) A")
    cap = cap.replace("→", "->").encode("latin-1", "replace").decode("latin-1")   # the default bitmap font
    ImageDraw.Draw(out).text((4, 5), cap, fill=(255, 255, 255))
    return np.asarray(out)


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8), "RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def file_name(event) -> str:
    """The gallery file of an event: ``f{frame:06d}_{kind}_t{atom_id}.png`` (unique per event)."""
    return f"f{int(event.frame):06d}_{event.kind}_t{int(event.atom_id)}.png"


def before_frame(frames, event, series: str | None = None):
    """The newest of ``frames`` (DisplayFrames, oldest first) before the event's first changed frame."""
    first = int(event.first_frame) if int(getattr(event, "first_frame", -1)) >= 0 else int(event.frame)
    best = None
    for df in frames:
        if df.seq < first and (series is None or df.series == series):
            best = df
    return best


class GalleryWriter:
    """Writes ``gallery/<file_name(event)>`` next to events.jsonl for every transformation event.

    ``write(result)`` takes every FrameResult in order (with ``image`` set); it keeps the last
    ``keep`` frames as DisplayFrames to find each event's frame before.
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
        self._idx = 0

    def write(self, result) -> list[str]:
        from dashboard.render import display_frame
        from engine.track.categories import BOOKKEEPING

        df = display_frame(result, self._idx, max_update_bytes=1 << 40)    # full resolution
        self._idx += 1
        names = []
        for e in result.events:
            if getattr(e, "category", "") == BOOKKEEPING and not self.bookkeeping:
                continue
            before = before_frame(self.frames, e, result.series)
            name = file_name(e)
            (self.dir / name).write_bytes(png_bytes(before_after(before, df, e, self.frames)))
            names.append(name)
        self.frames.append(df)
        self.written += names
        return names
