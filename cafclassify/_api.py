"""The package-level analysis functions (``cafclassify.read``, ``.qc``, ``.gate``, ...).

Each is the function of its subpackage (``cafclassify.tl.gate`` ...) plus one thing the
command line does for every step: it stamps a provenance record (the call, its
parameters, versions, date; see :mod:`cafclassify._provenance`) into
``uns["cafclassify"]["provenance"]``, so a report made from an object analysed in a
notebook shows that analysis, not the history of the file it was read from.

``cafclassify.classify`` also takes ``on_insufficient=`` like ``cafclassify classify
--on-insufficient``: with ``"skip"`` (the default, as in the workflow and the CLI) data
that cannot support subtyping keep their gate and scores and record the reason;
``"error"`` raises.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from ._errors import ConfigError, DataError
from ._provenance import api_record, stamp

__all__ = ["classify", "filter_cells", "gate", "qc", "read", "score"]


def _bound(func: Callable, args: tuple, kwargs: dict) -> dict:
    try:
        ba = inspect.signature(func).bind_partial(*args, **kwargs)
    except TypeError:
        return dict(kwargs)
    return {k: v for k, v in ba.arguments.items() if k not in ("adata", "copy")}


def _stamped(step: str, func: Callable, *, returns_new: bool = False) -> Callable:
    """``func`` that stamps provenance on the object it wrote to (or returned)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        result = func(*args, **kwargs)
        target = result if (returns_new or result is not None) and hasattr(result, "uns") else (
            args[0] if args else kwargs.get("adata"))
        if target is not None and hasattr(target, "uns"):
            params = _bound(func, args, kwargs)
            inputs = [str(params["path"])] if step == "read" and "path" in params else None
            sig = params.get("signatures", params.get("library"))
            stamp(target, api_record(step, params, inputs=inputs,
                                     signatures=sig if isinstance(sig, str) else None,
                                     seed=params.get("random_state")))
        return result

    return wrapper


def _load(module: str, name: str) -> Callable:
    import importlib

    return getattr(importlib.import_module(module), name)


read = _stamped("read", _load("cafclassify.io", "read"), returns_new=True)
qc = _stamped("qc", _load("cafclassify.pp", "qc"))
filter_cells = _stamped("filter_cells", _load("cafclassify.pp", "filter_cells"))
gate = _stamped("gate", _load("cafclassify.tl", "gate"))
score = _stamped("score", _load("cafclassify.scoring", "score"))

_tl_classify = _load("cafclassify.tl", "classify")


def _classify(adata, *args, on_insufficient: str = "skip", **kwargs):
    if on_insufficient not in ("skip", "error"):
        raise ConfigError(f"on_insufficient must be 'skip' or 'error', got {on_insufficient!r}.",
                          fix="pass on_insufficient='skip' (keep gate and scores, record why) or 'error'.")
    try:
        return _tl_classify(adata, *args, **kwargs)
    except DataError as exc:
        if on_insufficient == "error":
            raise
        from .tl._insufficient import mark_classification_skipped

        target = adata.copy() if kwargs.get("copy") else adata
        kept = {k: kwargs[k] for k in ("lineage_key", "perivascular", "tissue_key", "key_added", "signatures",
                                       "score_key", "layer", "state_z", "random_state") if k in kwargs}
        mark_classification_skipped(target, exc, **kept)
        return target if kwargs.get("copy") else None


def _with_on_insufficient(func: Callable) -> Callable:
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    extra = inspect.Parameter("on_insufficient", inspect.Parameter.KEYWORD_ONLY, default="skip",
                              annotation="str")
    before = next((i for i, p in enumerate(params) if p.name == "copy" or p.kind == p.VAR_KEYWORD),
                  len(params))
    params.insert(before, extra)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return _classify(*args, **kwargs)

    del wrapper.__wrapped__  # the signature below, not the wrapped one's
    wrapper.__signature__ = sig.replace(parameters=params)
    doc = inspect.getdoc(func) or ""
    note = ("    on_insufficient\n"
            "        When the data cannot support subtyping (too few fibroblasts or seed cells, too\n"
            "        few subtype gene sets covered): ``\"skip\"`` (default, as the workflow and the\n"
            "        CLI) keeps the gate and scores, assigns no subtype and records the reason in\n"
            "        ``uns[\"cafclassify\"][\"classify\"]``; ``\"error\"`` raises the DataError.\n")
    marker = "\nReturns\n-------"
    if marker in doc:
        head, tail = doc.split(marker, 1)
        doc = head.rstrip("\n") + "\n" + note.replace("    ", "", 1).replace("\n    ", "\n") + marker + tail
    wrapper.__doc__ = doc
    return wrapper


classify = _stamped("classify", _with_on_insufficient(_tl_classify))
