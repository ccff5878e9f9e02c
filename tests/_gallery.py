"""The before/after event picture (dashboard/gallery.py) of a Si switching 3 -> 4-fold, checked the
same way wherever it is drawn (dashboard panel, analyze's PNGs, the report)."""

from __future__ import annotations

import numpy as np

RED, YELLOW = np.array([0xff, 0x17, 0x44]), np.array([0xff, 0xd6, 0x00])      # 3-fold, 4-fold Si


def assert_si_3_then_4_fold(pic: np.ndarray) -> None:
    """``pic`` (H, W, 3 RGB) is one gallery picture whose dopant is drawn 3-fold (red) in the crop
    before and 4-fold (yellow) in the crop after: coordination is visible."""
    from dashboard import gallery

    assert pic.shape == (gallery.CROP_PX + gallery.CAPTION_PX, 2 * gallery.CROP_PX + gallery.GAP_PX, 3)
    p = pic.astype(int)
    c = gallery.CAPTION_PX + gallery.CROP_PX // 2
    left = p[c - 3:c + 4, gallery.CROP_PX // 2 - 3:gallery.CROP_PX // 2 + 4].reshape(-1, 3)
    rx = gallery.CROP_PX + gallery.GAP_PX + gallery.CROP_PX // 2
    right = p[c - 3:c + 4, rx - 3:rx + 4].reshape(-1, 3)
    assert (np.abs(left - RED).sum(1) < 30).any() and not (np.abs(left - YELLOW).sum(1) < 30).any()
    assert (np.abs(right - YELLOW).sum(1) < 30).any() and not (np.abs(right - RED).sum(1) < 30).any()
