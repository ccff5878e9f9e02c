"""PNG previews of simulated frames (the two in docs/), with a dependency-free 8-bit PNG writer.

``python -m lab.sim.preview [OUT_DIR]`` writes ``preview_field.png`` (a 256x256 crop of the
``field`` movie: Si dopants, a Si dimer and a Si3 cluster) and ``preview_switching.png`` (the
``switching`` movie's Si just before and after it becomes 4-fold, side by side, 2x enlarged).
Only simulated frames; contrast: percentiles 0.5-99.8 of each panel.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np


def write_png(path: str | Path, img: np.ndarray) -> Path:
    """Write a (H, W) uint8 array as an 8-bit greyscale PNG."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    p = Path(path)
    p.write_bytes(png)
    return p


def to_uint8(a: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.8) -> np.ndarray:
    a = np.asarray(a, np.float64)
    lo, hi = np.percentile(a, [lo_pct, hi_pct])
    return np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)


def _crop(img: np.ndarray, cx: float, cy: float, half: int) -> np.ndarray:
    h, w = img.shape
    x0 = int(np.clip(round(cx) - half, 0, w - 2 * half))
    y0 = int(np.clip(round(cy) - half, 0, h - 2 * half))
    return img[y0:y0 + 2 * half, x0:x0 + 2 * half]


def make_previews(out_dir: str | Path = "docs") -> list[Path]:
    from engine.sim.movie import run_movie, scenario

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    imgs, gt = run_movie(scenario("field", n_frames=9))
    f = 8
    fr = gt.frames[f]
    si = fr.xy_px[fr.species == 1]
    # the 256x256 window holding the most Si
    best, centre = -1, (256.0, 256.0)
    for cx in range(128, 385, 32):
        for cy in range(128, 385, 32):
            n = int(np.sum((np.abs(si[:, 0] - cx) < 118) & (np.abs(si[:, 1] - cy) < 118)))
            if n > best:
                best, centre = n, (cx, cy)
    paths = [write_png(out / "preview_field.png", to_uint8(_crop(imgs[f], *centre, 128)))]
    imgs, gt = run_movie(scenario("switching", n_frames=9))
    (ev,) = [e for e in gt.events if e["kind"] == "si_3_to_4"]
    f = ev["frame"]
    j = np.flatnonzero(gt.frames[f - 1].ids == ev["atom_id"])[0]
    x0, y0 = gt.frames[f - 1].xy_px[j]
    panels = [to_uint8(_crop(imgs[g], x0, y0, 48)) for g in (f - 1, f)]
    sep = np.full((96, 4), 255, np.uint8)
    both = np.hstack([panels[0], sep, panels[1]])
    paths.append(write_png(out / "preview_switching.png", np.kron(both, np.ones((2, 2), np.uint8))))
    return paths


if __name__ == "__main__":
    for p in make_previews(sys.argv[1] if len(sys.argv) > 1 else "docs"):
        print(f"wrote {p} ({p.stat().st_size:,} bytes)")
