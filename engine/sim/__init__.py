"""A simulated microscope: HAADF-STEM images and movies of Si-doped graphene with exact truth.

* :mod:`engine.sim.structures` - graphene and its defects as plain arrays (A);
* :mod:`engine.sim.imaging` - incoherent Z-contrast image formation, noise, scan distortions;
* :mod:`engine.sim.sample` - random samples and training examples over the full ranges.
"""

from engine.sim.imaging import ImagingParams, render
from engine.sim.sample import TrainingExample, make_training_example, random_sample

__all__ = ["ImagingParams", "render", "TrainingExample", "make_training_example", "random_sample"]
