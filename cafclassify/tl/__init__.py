"""Tools: the fibroblast/lineage gate and the CAF subtype classifier."""

from __future__ import annotations

from ._agreement import Agreement, agreement
from ._classify import classify, train
from ._gate import gate

__all__ = ["gate", "classify", "train", "Agreement", "agreement"]
