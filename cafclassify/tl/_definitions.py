"""What each subtype's definition rests on: the signature library's rating, next to the calls.

Why
---
The classifier treats every subtype it can learn alike: seeds, model, calibration and
prior. A probability of 0.9 therefore reads the same for myCAF, whose gene set holds
seed-named genes and a verified published list, as for dCAF, for which the seed reviews
name no specific gene (its genes come from review tables and an unverified third-party
list). A call says how clearly a cell carries a gene set, more than the other sets; it
cannot say how well the subtype itself is established. The built-in libraries state that
per set (``sets.tsv``, column ``evidence``), opening with a rating: "Good", "Moderate",
"Weak to moderate", "Weak", "Low confidence". So :func:`~cafclassify.tl.classify`
records each subtype set's rating and statement in
``uns["cafclassify"]["classify"]["definitions"]``, and the report lists them beside the
counts and warns when cells are called into a subtype whose definition is thin (a rating
that opens with "weak" or "low"), as it already did for the LTBP2+ axis, which rests on
one gene.

A user library without an ``evidence`` column gets the rating "not stated" and no
warning: nothing is claimed for it either way.
"""

from __future__ import annotations

import logging

__all__ = ["NOT_STATED", "THIN_RATINGS", "definition_records", "is_thin"]

logger = logging.getLogger(__name__)

#: a rating that opens with one of these words marks a thin definition
THIN_RATINGS = ("weak", "low")
#: the rating is the text before the first colon, when that comes early in the statement
_MAX_RATING_CHARS = 40
#: the rating of a set whose library states no evidence
NOT_STATED = "not stated"


def _rating(evidence: str) -> str:
    """The rating a library's evidence statement opens with ("Good: 6 seed-named ..." -> "Good")."""
    text = (evidence or "").strip()
    if not text:
        return NOT_STATED
    head, sep, _ = text.partition(":")
    return head.strip() if sep and len(head) <= _MAX_RATING_CHARS else NOT_STATED


def is_thin(rating: str) -> bool:
    """Whether a rating marks a thin definition (opens with "weak" or "low")."""
    return str(rating).strip().lower().startswith(THIN_RATINGS)


def definition_records(library) -> dict[str, dict]:
    """How well the definition of every subtype set of ``library`` is established.

    Parameters
    ----------
    library
        Anything :func:`~cafclassify.genesets.load_signatures` accepts.

    Returns
    -------
    dict
        Set name -> ``display_name``, ``rating`` (the library's, e.g. ``"Low confidence"``,
        or ``"not stated"``), ``thin`` (the rating opens with "weak" or "low") and
        ``evidence`` (the library's whole statement), in library order.

    Examples
    --------
    >>> recs = definition_records("caf_v1")
    >>> recs["myCAF"]["rating"], recs["myCAF"]["thin"]
    ('Good', False)
    >>> recs["dCAF"]["rating"], recs["dCAF"]["thin"]
    ('Low confidence', True)
    """
    from ..genesets import load_signatures

    out = {}
    for name, gs in load_signatures(library).sets.items():
        if gs.group == "subtype":
            rating = _rating(gs.evidence)
            out[name] = {"display_name": gs.display_name or name, "rating": rating, "thin": is_thin(rating),
                         "evidence": (gs.evidence or "").strip()}
    return out
