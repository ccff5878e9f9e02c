"""Which events are transformations of the sample and which are bookkeeping of the tracker.

An operator is alarmed only by a **transformation**: something happened to the material (a Si goes
3 -> 4-fold or back, hops, forms or breaks a dimer, a cluster turns or changes, a vacancy opens or
fills, an atom is ejected, a genuinely new motif appears). **Bookkeeping** says something about the
field of view or the tracker, not the sample: an atom or dopant entered or left the field (drift
carries atoms across the frame edge), a track was lost at the edge, the tracks were reset. Bookkeeping
is logged but never raises the banner or the sound (the dashboard hides it by default).

Plain functions of ``(kind, before, after)``, so every consumer (events.jsonl, the events socket,
the dashboard, ``stemwatch evaluate``) classifies the same way. An unknown kind is a
transformation: an event nobody classified must not be silenced.
"""

from __future__ import annotations

TRANSFORMATION = "transformation"
BOOKKEEPING = "bookkeeping"
CATEGORIES = (TRANSFORMATION, BOOKKEEPING)

#: kinds that are always bookkeeping (the tracker's own state, never the sample's)
BOOKKEEPING_KINDS = frozenset({"track_lost", "tracks_reset", "fov_jump", "atom_entered", "atom_left"})
#: ``before`` / ``after`` values that mean "the field of view moved", not "the sample changed":
#: a Si that enters from outside the field, a track first seen after the series' first frame with no
#: change of species (``absent``: it was not tracked before, e.g. after a reset), a Si that left
BOOKKEEPING_BEFORE = frozenset({"outside field", "absent"})
BOOKKEEPING_AFTER = frozenset({"left field"})

#: severity of a transformation for the banner colour: 3 = the sample lost or gained atoms or a new
#: structure appeared, 2 = a dopant changed its bonding or place, 1 = a change of the defect's
#: description only. Bookkeeping is 0.
SEVERITY = {"si_lost": 3, "vacancy_created": 3, "vacancy_filled": 3, "atom_ejected": 3, "new_motif": 3,
            "cluster_changed": 2, "si_3_to_4": 2, "si_4_to_3": 2, "si_hop": 2, "dimer_formed": 2,
            "dimer_broken": 2, "rotor": 2, "si_appeared": 2, "formula_changed": 1}
SEVERITY_NAMES = {0: "info", 1: "low", 2: "medium", 3: "high"}


def category_of(kind: str, before: str = "", after: str = "") -> str:
    """``"transformation"`` or ``"bookkeeping"`` for an event of ``kind`` going ``before`` -> ``after``."""
    if kind in BOOKKEEPING_KINDS:
        return BOOKKEEPING
    if str(before) in BOOKKEEPING_BEFORE or str(after) in BOOKKEEPING_AFTER:
        return BOOKKEEPING
    return TRANSFORMATION


def severity_of(kind: str, before: str = "", after: str = "") -> int:
    """0 (bookkeeping) .. 3 (atoms lost or gained, a new structure); see :data:`SEVERITY`."""
    if category_of(kind, before, after) == BOOKKEEPING:
        return 0
    return SEVERITY.get(kind, 2)


def is_alarm(event) -> bool:
    """Whether an event (an :class:`engine.types.Event` or its dict) may raise the banner and sound."""
    get = event.get if isinstance(event, dict) else (lambda k, d="": getattr(event, k, d))
    cat = get("category", "") or category_of(get("kind", ""), get("before", ""), get("after", ""))
    return cat != BOOKKEEPING
