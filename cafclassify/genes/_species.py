"""Species evidence from gene names, and the warnings when it disagrees with what was said.

:func:`~cafclassify.genes.detect_species` looks names up case-sensitively: human
symbols are upper case (``COL1A1``), mouse symbols title case (``Col1a1``). Some
pipelines write mouse genes in upper case, and most of them are then valid human
symbols: case alone calls such data human. Two kinds of evidence tell them apart:

* **mouse-only genes**: names that are not human symbols but are mouse symbols once
  case is ignored (mouse genes without a same-named human orthologue, ``Gm12345``,
  ``1810055G02Rik``, ``Serpina3n``, ``H2-Ab1`` ...). Human data hold few of them
  (82 of 33,694 names, 0.24%, in a Cell Ranger GRCh38 file: outdated human names
  such as YARS that are also mouse names), upper-cased mouse data many (1,201 of
  15,000, 8%, in simulated mouse data): the thresholds sit between;
* **case pattern**: the fraction of names in upper case and in title case.

:func:`species_evidence` returns both with a verdict; data that look human by case
but carry at least :data:`MOUSE_ONLY_MIN` mouse-only genes (and
:data:`MOUSE_ONLY_FRAC` of the names) are ``"ambiguous"``: they are matched as
written (upper-case names match human signatures) and a WARNING says so.
:func:`species_warning` turns a disagreement between the evidence and a declared
species (``read(species=...)``), or between a model's species and the data's
(:func:`species_mismatch`), into a WARNING in the log and a record for ``uns``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["MOUSE_ONLY_FRAC", "MOUSE_ONLY_MIN", "note_model_species", "species_evidence", "species_mismatch",
           "species_warning"]

logger = logging.getLogger(__name__)

#: mouse-only genes (case ignored) that make upper-case data ambiguous
MOUSE_ONLY_MIN = 20
MOUSE_ONLY_FRAC = 0.01
_MOUSE_PATTERN = re.compile(r"^(GM\d{4,}|\d{7}[A-Z]\d{2}RIK|[A-Z0-9]+RIK\d*)$")


@lru_cache(maxsize=1)
def _mouse_only_upper() -> frozenset[str]:
    """Upper-cased mouse symbols whose upper case is no human symbol."""
    from ._tables import human_symbols, mouse_symbols

    human = human_symbols()
    return frozenset(m.upper() for m in mouse_symbols() if m.upper() not in human)


def species_evidence(names: Sequence[str]) -> dict:
    """What the gene names say about the species.

    Parameters
    ----------
    names
        Gene symbols (e.g. ``adata.var_names``).

    Returns
    -------
    dict with ``by_case`` (:func:`~cafclassify.genes.detect_species`), ``frac_upper``,
    ``frac_title``, ``n_mouse_only`` (mouse-only genes, case ignored), ``mouse_only_examples``
    and ``verdict``: ``"human"``, ``"mouse"``, ``"ambiguous"`` (upper case, yet mouse-only
    genes) or ``"unknown"``; ``reason`` in plain words.
    """
    from ._identity import detect_species
    from ._symbols import repair_symbol
    from ._tables import human_symbols

    vals = [str(n).strip() for n in names if n is not None and str(n).strip()]
    by_case = detect_species(vals)
    letters = [v for v in vals if any(c.isalpha() for c in v)]
    n = max(len(letters), 1)
    frac_upper = sum(v == v.upper() for v in letters) / n
    frac_title = sum(v[:1].isupper() and v[1:] == v[1:].lower() and v != v.upper() for v in letters) / n
    human, mouse_only = human_symbols(), _mouse_only_upper()
    hits = [v for v in letters if v not in human and (v.upper() in mouse_only or _MOUSE_PATTERN.match(v.upper()))
            and repair_symbol(v, "human") not in human]  # outdated human names (YARS, SARS) are human
    out = {"by_case": by_case, "frac_upper": round(frac_upper, 4), "frac_title": round(frac_title, 4),
           "n_mouse_only": len(hits), "mouse_only_examples": hits[:10]}
    strong = len(hits) >= MOUSE_ONLY_MIN and len(hits) >= MOUSE_ONLY_FRAC * len(letters)
    if by_case == "human" and strong and frac_upper > 0.5:
        out["verdict"] = "ambiguous"
        out["reason"] = (f"the names are upper case like human symbols, but {len(hits)} are mouse-only "
                         f"genes (e.g. {', '.join(hits[:5])}): probably mouse genes written in upper case")
    else:
        out["verdict"] = by_case
        out["reason"] = f"{frac_upper:.0%} upper-case and {frac_title:.0%} title-case names; " \
                        f"{len(hits)} mouse-only genes"
    return out


def species_warning(evidence: dict, *, declared: str | None, where: str) -> dict | None:
    """WARNING (logged) and ``uns`` record when the names disagree with the species used.

    Parameters
    ----------
    evidence
        From :func:`species_evidence`.
    declared
        The species given by the user (``species=``/``--species``), or ``None`` if detected.
    where
        The file or object, for the message.

    Returns
    -------
    ``None`` when nothing disagrees, else ``{"kind", "declared", "evidence", "message"}``.
    """
    verdict = evidence.get("verdict", "unknown")
    if declared is not None and verdict in ("human", "mouse") and verdict != declared:
        kind = "declared_species_mismatch"
        msg = (f"{where}: species {declared!r} was given, but the gene names look {verdict} "
               f"({evidence['reason']}); using {declared!r} as told. Check --species / species=.")
    elif declared is None and verdict == "ambiguous":
        kind = "ambiguous_species"
        msg = (f"{where}: {evidence['reason']}. Matched as written (upper-case names match human "
               "signatures). If these are mouse data, write the gene names in mouse case (Col1a1) "
               "and pass --species mouse (species='mouse').")
    elif declared == "human" and verdict == "ambiguous":
        return None  # said human on purpose: the user knows the names are upper case
    else:
        return None
    logger.warning("%s", msg)
    return {"kind": kind, "declared": declared, "evidence": verdict, "message": msg}


def species_mismatch(model_species: str, data_species: str, *, model_path: str | None = None) -> dict | None:
    """WARNING and ``uns`` record when a model of one species is applied to data of another.

    The classifier then maps the model genes through the orthologue table
    (``cafclassify.tl._classify._Features``); cross-species application is possible but
    a scientific choice the user must see, so it is a WARNING, not an INFO line.

    Returns
    -------
    ``None`` for the same (or an unknown) species, else ``{"kind", "model_species",
    "data_species", "message"}`` for ``uns["cafclassify"]["classify"]``.
    """
    known = ("human", "mouse")
    if model_species not in known or data_species not in known or model_species == data_species:
        return None
    msg = (f"the model{f' {model_path}' if model_path else ''} was trained on {model_species} data "
           f"and is applied to {data_species} data: its genes are mapped through the "
           f"{model_species}->{data_species} orthologue table. Cross-species calls are less certain; "
           f"train a model on {data_species} data if there is one.")
    logger.warning("%s", msg)
    return {"kind": "model_species_mismatch", "model_species": model_species,
            "data_species": data_species, "message": msg}


def note_model_species(adata, model_species: str, *, model_path: str | None = None) -> dict | None:
    """After ``classify(adata, model)``: warn and record when model and data species differ.

    Reads the data species the classifier used (``uns["cafclassify"]["classify"]
    ["gene_overlap"]["data_species"]``) and stores the :func:`species_mismatch` record as
    ``uns["cafclassify"]["classify"]["species_warning"]`` (shown in the report).
    """
    from .. import _keys as K

    sec = adata.uns.get(K.UNS, {}).get(K.UNS_CLASSIFY)
    if not isinstance(sec, dict):
        return None
    overlap = sec.get("gene_overlap")
    data_species = overlap.get("data_species", "unknown") if isinstance(overlap, dict) else "unknown"
    rec = species_mismatch(model_species, str(data_species), model_path=model_path)
    if rec is not None:
        sec["species_warning"] = rec
    return rec
