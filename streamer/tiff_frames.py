"""TIFF stacks read frame by frame (tifffile): one page in memory at a time, not the whole stack.

The pixel size comes from the ImageJ ``unit`` with the XResolution tag (pixels per unit), the frame
interval from ImageJ ``finterval``; the first series of the file is read, page by page
(``TiffFile.asarray(key=i)``). A page that cannot be read ends the import with a message naming the
frames that were read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from streamer.file_common import check_frame_bytes, frames_one_by_one, length_A
from streamer.frame import Frame


def read_tiff(path: Path, pixel_size_A=None, frame_time_s: float = 0.2, key=None) -> Iterator[Frame]:
    """Frames of a TIFF image or stack (module docstring)."""
    import tifffile

    from streamer.importers import FileImportError

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:       # tifffile raises many types on damaged headers
        raise FileImportError(f"{path.name}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
    with tif:
        try:
            ij = tif.imagej_metadata or {}
            if not tif.series:
                raise FileImportError(f"{path.name}: no image in the TIFF file")
            ser = tif.series[0]
            shape, dtype = tuple(int(v) for v in ser.shape), ser.dtype
            page = ser.pages[0] if ser.pages else tif.pages[0]
            if pixel_size_A is None:
                res = page.tags.get("XResolution")
                unit = ij.get("unit")
                if res is not None and unit:
                    num, den = res.value
                    if num > 0:
                        pixel_size_A = length_A(den / num, unit)
            if "finterval" in ij:
                frame_time_s = float(ij["finterval"])
            page_shape = tuple(int(v) for v in page.shape)
        except FileImportError:
            raise
        except Exception as exc:
            raise FileImportError(f"{path.name}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
        if len(page_shape) == 3 and page_shape[-1] in (3, 4) or "S" in str(getattr(ser, "axes", "")):
            raise FileImportError(f"{path.name}: an RGB(A) colour image (pages {page_shape}), not a detector "
                                  "signal: save the STEM image as greyscale (one value per pixel)")
        if len(page_shape) != 2:
            raise FileImportError(f"{path.name}: pages of shape {page_shape}; single-channel (H, W) pages are read")
        check_frame_bytes(path.name, page_shape, dtype)
        n = 1
        for v in shape[:-2]:
            n *= v
        try:                       # ImageJ's own count survives when a cut file loses the stack's pages
            declared = int(ij.get("images", 0) or 0)
        except (TypeError, ValueError):
            declared = 0
        available = n

        def read(i: int):
            if i >= available:
                raise IndexError(f"the file ends before frame {i} (ImageJ declares {declared} images)")
            return tif.asarray(key=i, series=0)

        meta = {"tiff_imagej": bool(tif.is_imagej), "frame_time_s": float(frame_time_s)}
        yield from frames_one_by_one(path.name, max(n, declared), read, pixel_size_A,
                                     lambda i: i * float(frame_time_s), meta, what="TIFF stack")
