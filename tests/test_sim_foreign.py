"""Out-of-family test images (lab.sim.foreign): right shape, deterministic, truth where the atoms are."""

import numpy as np
import pytest

from lab.sim.foreign import STYLES, foreign_example


@pytest.mark.parametrize("style", STYLES)
def test_foreign_styles_put_atoms_where_the_truth_says(style):
    ex = foreign_example(np.random.default_rng(1), style, (160, 160), 0.1, si_per_nm2=0.8, adatoms=False,
                         holes=False)
    again = foreign_example(np.random.default_rng(1), style, (160, 160), 0.1, si_per_nm2=0.8, adatoms=False,
                            holes=False)
    assert np.array_equal(ex.image, again.image)
    img = ex.image.astype(np.float64)
    assert img.shape == (160, 160) and np.isfinite(img).all()
    from scipy import ndimage as ndi

    sm = ndi.gaussian_filter(img, 2.0)
    inside = (ex.xy_px > 3).all(1) & (ex.xy_px < 156).all(1)
    at = sm[np.round(ex.xy_px[inside, 1]).astype(int), np.round(ex.xy_px[inside, 0]).astype(int)]
    c, si = at[ex.species[inside] == 0], at[ex.species[inside] == 1]
    # atoms sit on brighter-than-median pixels, Si brighter than C (row rolls displace only a few rows)
    assert c.mean() > np.median(sm) and len(si) > 0
    assert si.mean() > 1.5 * c.mean() - 0.5 * np.median(sm)


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="style"):
        foreign_example(np.random.default_rng(0), "multislice")
