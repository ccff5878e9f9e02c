"""A simulated microscope: HAADF-STEM images and movies of Si-doped graphene with exact truth.

* :mod:`engine.sim.structures` - graphene and its defects as plain arrays (A);
* :mod:`engine.sim.imaging` - incoherent Z-contrast image formation, noise, scan distortions;
* :mod:`engine.sim.sample` - random samples and training examples over the full ranges.

The names below are imported on first use (PEP 562), so that importing a light submodule such as
``engine.sim.cli`` (every ``stemwatch`` command line builds its parser from it) does not pay for
scipy's FFT and special functions.
"""

from importlib import import_module

#: public name -> the submodule that defines it
_EXPORTS = {"ImagingParams": "engine.sim.imaging", "render": "engine.sim.imaging",
            "TrainingExample": "engine.sim.sample", "make_training_example": "engine.sim.sample",
            "random_sample": "engine.sim.sample"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine.sim' has no attribute {name!r}")
