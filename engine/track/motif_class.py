"""Which defects are a *new kind*: the class a ``new_motif`` event is raised for, once per session.

The motif library (:mod:`engine.chem.motifs`) names a defect by the exact signature of its
neighbourhood, so a known defect in an unusual neighbourhood (a vacancy beside a Si, a jittered
bond at low dose) gets a fresh "new motif k" name. That is a new *signature*, not a new *kind* of
defect: the operator knows vacancies. A defect is of a known class when its library name is not a
"new motif" (a built-in or operator-given name) or when its kind is one the lattice graph names
itself (:data:`KNOWN_KINDS`: vacancy, divacancy, 5-8-5, 555-777, Stone-Wales, Si1C3 3-fold,
Si1C4 4-fold, Si dimers and clusters, and the regions: edge, hole, contamination). Anything else is
new, and its class is ``(kind, formula)`` (e.g. ``("topological", "R5-7x2")``,
``("Si-2fold", "Si1C2")``): one event per class per session, not one per signature.
"""

from __future__ import annotations

KNOWN_KINDS = frozenset({"vacancy", "divacancy", "5-8-5", "555-777", "Stone-Wales", "Si-3fold", "Si-4fold",
                         "Si-dimer", "Si-cluster", "edge", "hole", "contamination"})


def motif_class(defect) -> tuple[str, str] | None:
    """The new-motif class of a :class:`engine.types.Defect`, or None when it is a known kind."""
    motif = getattr(defect, "motif", "") or ""
    if not motif.startswith("new motif"):
        return None                                    # named: built in, or given by the operator
    if defect.kind in KNOWN_KINDS:
        return None
    return (str(defect.kind), str(defect.formula))
