"""The material check's per-shape constants are made once per frame shape (read-only, cached): the
Spectrum's window, radial bins and band (engine.health.material_spectrum._geometry) had lost their
cache, so every full check of a series rebuilt them (~0.4 ms of a 3.6 ms check at 256^2)."""

import numpy as np
import pytest

from engine.health import material_cadence, material_spectrum, scale


@pytest.mark.parametrize("geometry, args", [(material_spectrum._geometry, (96, 128, 2)),
                                            (material_cadence._geometry, (96, 65)),
                                            (scale._geometry, (128,))])
def test_per_shape_constants_are_made_once_and_read_only(geometry, args):
    first, again = geometry(*args), geometry(*args)
    assert all(a is b for a, b in zip(first, again)), "the constants of one shape are computed once"
    for a in first:
        if isinstance(a, np.ndarray):
            assert not a.flags.writeable, "shared between calls: read-only"


def test_spectra_of_frames_of_one_shape_share_the_constants():
    rng = np.random.default_rng(0)
    a = material_spectrum.Spectrum(rng.normal(size=(128, 128)).astype(np.float32), 1)
    b = material_spectrum.Spectrum(rng.normal(size=(128, 128)).astype(np.float32), 1)
    assert a.band is b.band and a.wy is b.wy
