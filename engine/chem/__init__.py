"""From probabilities to chemistry: atoms, the lattice graph, coordination, rings, defects, motifs.

Public API::

    find_atoms(probs, cfg, image=None) -> Atoms          # engine.chem.atoms
    build_chemistry(atoms, cfg, motifs=None) -> Chemistry  # engine.chem.chemistry
    analyze(probs, cfg, image=None, motifs=None) -> Chemistry
    MotifLibrary(path=None)                               # engine.chem.motifs
    atoms_to_csv, chemistry_to_json                       # engine.chem.export

``cfg`` is :class:`stemwatch.config.ChemistryConfig`. See docs/chemistry.md.
"""

from engine.chem.atoms import find_atoms
from engine.chem.chemistry import analyze, build_chemistry
from engine.chem.motifs import MotifLibrary

__all__ = ["find_atoms", "build_chemistry", "analyze", "MotifLibrary"]
