"""Which ``obs`` column names each cell's sample: one rule for every table and page.

The command line's ``cells.csv`` and ``proportions.csv``, the per-dataset report and the
summary across datasets all split cells by sample. They must split them the same way, or
a proportion in a table and the same proportion on a page have different denominators.
So there is one rule, here:

1. **A recorded column.** The first of these that names an ``obs`` column: the
   ``sample_key`` that :func:`cafclassify.qc` used (its per-sample thresholds), the
   ``sample_column`` that :func:`cafclassify.read` recorded, the ``batch_key`` that
   :func:`cafclassify.classify` was given, and the ``sample_key`` / ``sample_column``
   parameters of the provenance records (the last step's, then its history from the
   most recent step back).
2. **A conventional column**, only when asked (``conventional=True``) and nothing was
   recorded: the first of ``sample``, ``sample_id``, ``batch`` and ``orig.ident``
   (Seurat's) that is an ``obs`` column. Public objects often carry one without any
   step having been told about it; the report and the command line use it, a notebook
   call of :func:`~cafclassify.get.proportion_table` asks for its ``sample_key``
   explicitly.

A value recorded under one of these names that is not (or no longer) an ``obs`` column
is passed over; ``None`` means every cell is one sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import _keys as K

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["CONVENTIONAL_SAMPLE_COLUMNS", "recorded_sample_key"]

#: obs columns read as the sample when no step recorded one (``conventional=True``)
CONVENTIONAL_SAMPLE_COLUMNS = ("sample", "sample_id", "batch", "orig.ident")


def recorded_sample_key(adata: AnnData, *, conventional: bool = False) -> str | None:
    """The ``obs`` column that names each cell's sample.

    Parameters
    ----------
    adata
        Annotated data (after any step, or none).
    conventional
        When no step recorded a column, also accept the first of
        :data:`CONVENTIONAL_SAMPLE_COLUMNS` that ``adata.obs`` has. The report and the
        command line's tables use ``True``.

    Returns
    -------
    The column name, or ``None`` (every cell is one sample). The order in which records
    are read is in the module docstring.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> import cafclassify as caf
    >>> a = ad.AnnData(np.zeros((2, 1)), obs=pd.DataFrame({"orig.ident": ["p1", "p2"]}, index=["a", "b"]))
    >>> caf.get.recorded_sample_key(a) is None
    True
    >>> caf.get.recorded_sample_key(a, conventional=True)
    'orig.ident'
    """
    columns = set(map(str, adata.obs.columns))
    for c in _recorded(adata.uns.get(K.UNS)):
        if isinstance(c, str) and c not in ("", "None", "NA") and c in columns:
            return c
    if conventional:
        for c in CONVENTIONAL_SAMPLE_COLUMNS:
            if c in columns:
                return c
    return None


def _recorded(root: Any) -> list[Any]:
    """Candidate column names in the order of the module docstring's first rule."""
    root = _mapping(root)
    qc = _mapping(root.get(K.UNS_QC))
    read = _mapping(root.get(K.UNS_READ))
    classify = _mapping(root.get(K.UNS_CLASSIFY))
    prov = _mapping(root.get(K.UNS_PROVENANCE))
    out = [_mapping(qc.get("params")).get("sample_key"), qc.get("sample_key"),
           read.get("sample_column"), read.get("sample_key"),
           _mapping(classify.get("params")).get("batch_key"), classify.get("sample_key")]
    history = _mapping(prov.get("history"))
    for rec in [prov, *reversed(list(history.values()))]:
        params = _mapping(_mapping(rec).get("parameters"))
        out += [params.get("sample_key"), params.get("sample_column")]
    return out


def _mapping(x: Any) -> Mapping:
    return x if isinstance(x, Mapping) else {}
