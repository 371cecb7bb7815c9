"""Self-contained HTML reports: one QC report per dataset and a cross-dataset summary.

``report`` is an alias of :func:`write_report`. Because this subpackage is itself
named ``report``, importing it replaces the lazy ``cafclassify.report`` function
attribute with this module; the module is therefore made callable, so
``cafclassify.report(adata, "report.html")`` works either way.
"""

from __future__ import annotations

import sys
import types

from ._html import write_report, write_summary

report = write_report

__all__ = ["report", "write_report", "write_summary"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return write_report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
