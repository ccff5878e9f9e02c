"""Every evaluation radius and frame allowance in one place (angstrom and frames).

Imported by the scorers (:mod:`lab.match`, :mod:`lab.eventscore`, :mod:`lab.evaluate`,
:mod:`lab.chem.evaluate`, :mod:`lab.chem.heldout`, :mod:`lab.infer.evaluate`) and by the
``evaluate`` command's defaults. No imports: the CLI reads it when building its parser.
"""

#: a found atom is the true one when they are mutual nearest neighbours this close (about a third
#: of the 1.42 A C-C bond, so the match is unambiguous)
ATOM_MATCH_RADIUS_A = 0.5
#: a true defect is matched to the found defect whose centre is nearest, within this
DEFECT_MATCH_RADIUS_A = 1.5
#: a reported event is about the truth event's atom when it lies this close to where that atom is
EVENT_RADIUS_A = 2.5
#: ``stemwatch evaluate``: atoms this close to the frame edge form an ignore region
EDGE_IGNORE_A = 0.5
#: atoms this close to amorphous contamination are not scored (and not trained on)
CONTAMINATION_IGNORE_A = 1.0
#: an event reported at most this many analysed frames after the truth event finds it
MAX_LATENCY_FRAMES = 3
#: truth events in the first / last this many analysed frames cannot be confirmed by an online
#: k-of-n detector inside the movie: matched, not counted in recall
WARMUP_FRAMES = 2
END_MARGIN_FRAMES = 2
