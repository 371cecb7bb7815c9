"""Pooling several datasets into one AnnData, for a model trained across them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anndata as ad
import pandas as pd

from .._errors import DataError
from .._keys import OBSM_LINEAGE_SCORES, OBSM_SCORES

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["pool"]

logger = logging.getLogger(__name__)


def pool(adatas: Sequence[AnnData], names: Sequence[str], *, batch_key: str = "dataset") -> AnnData:
    """Concatenate datasets for pooled training: shared genes, shared score columns.

    Genes are joined on their intersection (anndata's ``join="inner"``); of the
    ``obsm`` entries only those every dataset has are kept, and of a DataFrame entry only
    the columns every dataset has. The inputs are not modified.

    Parameters
    ----------
    adatas
        The datasets (same species and gene identifiers).
    names
        One name per dataset: the values of ``obs[batch_key]`` and the suffix added to
        the cell names.
    batch_key
        obs column (categorical) that records each cell's dataset; pass it as
        ``batch_key`` to :func:`cafclassify.train`.

    Returns
    -------
    The pooled AnnData.

    Raises
    ------
    DataError
        When the datasets share no genes, or no columns of their subtype or lineage
        scores.
    """
    if len(adatas) != len(names):
        raise DataError(f"{len(adatas)} datasets but {len(names)} names.", fix="give one name per dataset.")
    common_obsm = set.intersection(*(set(a.obsm.keys()) for a in adatas))
    obsm = [{} for _ in adatas]
    for key in common_obsm:
        frames = [a.obsm[key] for a in adatas]
        cols = None
        if all(isinstance(f, pd.DataFrame) for f in frames):
            cols = [c for c in frames[0].columns if all(c in f.columns for f in frames[1:])]
            if not cols and key in (OBSM_SCORES, OBSM_LINEAGE_SCORES):
                raise DataError(
                    f"the datasets share no columns in obsm[{key!r}], so they cannot be pooled.",
                    path=", ".join(names),
                    fix="score all datasets with the same signature library, or train one model per dataset.",
                )
        for i, f in enumerate(frames):
            obsm[i][key] = f[cols] if cols is not None else f
    # light shells around the inputs (no matrix copied, the inputs' obsm untouched)
    shells = [ad.AnnData(X=a.X, obs=a.obs, var=a.var, obsm=o, layers=dict(a.layers))
              for a, o in zip(adatas, obsm, strict=True)]
    pooled = ad.concat(shells, join="inner", label=batch_key, keys=list(names), index_unique="-",
                       merge="same")
    pooled.obs[batch_key] = pooled.obs[batch_key].astype("category")
    if pooled.n_vars == 0:
        raise DataError(
            "the datasets share no genes, so they cannot be pooled.",
            path=", ".join(names),
            fix="check that all datasets use the same species and gene identifiers.",
        )
    logger.info("pooled %d datasets: %d cells x %d shared genes", len(adatas), pooled.n_obs, pooled.n_vars)
    return pooled
