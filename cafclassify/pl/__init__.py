"""Plots for notebooks, in scanpy's style: ``adata`` first, ``ax=``, ``show=``, ``save=``.

Every function draws on the given matplotlib Axes (or a new figure), returns the Axes,
and uses the package's fixed palette (soft tones for lineages, saturated ones for
subtypes), the same as the HTML reports, which call these functions too.
"""

from __future__ import annotations

from ._plots import agreement, composition, lineages, reliability, signature_scores, subtypes

__all__ = ["agreement", "composition", "lineages", "reliability", "signature_scores", "subtypes"]
