"""Tools: the fibroblast/lineage gate and the CAF subtype classifier."""

from __future__ import annotations

from ._gate import gate

__all__ = ["gate"]

try:  # the classifier is written separately; keep the gate importable without it
    from ._classify import classify, train

    __all__ += ["classify", "train"]
except ImportError as _exc:  # pragma: no cover - only while _classify is missing/broken
    import logging as _logging

    _logging.getLogger(__name__).debug("cafclassify.tl: classifier not importable (%s)", _exc)

from ._agreement import Agreement, agreement

__all__ += ["Agreement", "agreement"]
