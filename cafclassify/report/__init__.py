"""Self-contained HTML reports: one QC report per dataset and a cross-dataset summary.

Use :func:`write_report` for one annotated dataset and :func:`write_summary` for a
page across datasets; both are also available as ``cafclassify.write_report`` and
``cafclassify.write_summary``.
"""

from __future__ import annotations

from ._html import write_report
from ._summary import write_summary

__all__ = ["write_report", "write_summary"]
