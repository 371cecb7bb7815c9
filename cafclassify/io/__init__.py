"""Reading single-cell data as it comes (:func:`read`) and fetching it (:func:`fetch`)."""

from __future__ import annotations

from ._fetch import fetch
from ._formats import FORMATS, sniff_format
from ._read import ORIENTATIONS, read, read_backed
from ._values import VALUE_TYPE_OVERRIDES
from ._valuetype import VALUE_TYPES, detect_value_type, value_type_details

__all__ = [
    "FORMATS",
    "ORIENTATIONS",
    "VALUE_TYPES",
    "VALUE_TYPE_OVERRIDES",
    "detect_value_type",
    "fetch",
    "read",
    "read_backed",
    "sniff_format",
    "value_type_details",
]
