"""Small helpers shared by the analysis functions."""

from __future__ import annotations

from anndata import AnnData

from ._errors import DataError

__all__ = ["get_matrix"]


def get_matrix(adata: AnnData, layer: str | None):
    """Return ``(matrix, where)`` for ``adata.X`` or ``adata.layers[layer]``.

    Parameters
    ----------
    adata
        The data.
    layer
        A layer name, or ``None`` for ``adata.X``.

    Returns
    -------
    The matrix (as stored: sparse, dense or a backed dataset) and a short description of
    where it came from, for messages.
    """
    if layer is None:
        X, where = adata.X, "adata.X"
    else:
        if layer not in adata.layers:
            raise DataError(
                f"layer {layer!r} not found (available layers: {sorted(adata.layers) or 'none'}).",
                path="adata.layers",
                fix="pass layer=None to use adata.X, or one of the available layers.",
            )
        X, where = adata.layers[layer], f"adata.layers[{layer!r}]"
    if X is None:
        raise DataError(
            "the AnnData object has no expression matrix.",
            path=where,
            fix="load the data with its matrix (X).",
        )
    if X.shape != (adata.n_obs, adata.n_vars):
        raise DataError(
            f"matrix shape {X.shape} does not match the AnnData shape {adata.shape}.", path=where
        )
    return X, where
