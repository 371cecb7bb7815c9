"""State shared while one report is built: the plotting subsample and its embedding."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from . import _figures as F
from ._common import (
    MIN_CELLS_FIBRO_UMAP,
    _materialise,
    _subsample,
)

logger = logging.getLogger(__name__)


class _Ctx:
    """Shared state while building one report."""

    def __init__(self, adata, *, max_cells_plot: int, random_state: int) -> None:
        self.adata = adata
        self.random_state = random_state
        self.idx = _subsample(adata, max_cells_plot, random_state)
        self.n_plot = len(self.idx)
        self._sub = None
        self._coords: np.ndarray | None = None
        self.basis = "UMAP"
        self.embedding_note = ""
        self.errors: list[str] = []

    @property
    def sub(self):
        if self._sub is None:
            self._sub = _materialise(self.adata, self.idx)
        return self._sub

    def _stored(self) -> bool:
        return any(k in self.adata.obsm and np.asarray(self.adata.obsm[k]).shape[1] >= 2
                   for k in ("X_umap", "X_tsne"))

    def coords(self) -> np.ndarray | None:
        if self._coords is not None:
            return self._coords
        for key, basis in (("X_umap", "UMAP"), ("X_tsne", "t-SNE")):
            if key in self.adata.obsm and np.asarray(self.adata.obsm[key]).shape[1] >= 2:
                self._coords = np.asarray(self.adata.obsm[key])[self.idx, :2].astype(float)
                self.basis = basis
                self.embedding_note = f"stored {basis} (obsm['{key}'])"
                return self._coords
        if self.n_plot < 10:
            self.embedding_note = "too few cells for an embedding"
            return None
        try:
            self._coords = F.compute_umap(self.sub, random_state=self.random_state)
        except Exception as exc:
            logger.warning("could not compute a UMAP for the report: %s", exc)
            self.embedding_note = f"no embedding: UMAP failed ({type(exc).__name__}: {exc})"
            return None
        self.embedding_note = (f"UMAP computed for this report on {self.n_plot:,} cells "
                               f"(random_state={self.random_state})")
        return self._coords

    def fibro_coords(self, mask: np.ndarray) -> tuple[np.ndarray | None, str]:
        """Embedding of the plotted fibroblasts only (subtypes are invisible on a whole-tumour map).

        A stored embedding is reused (drawing only fibroblasts zooms onto them);
        otherwise a UMAP of the plotted fibroblasts is computed.
        """
        coords = self.coords() if self._stored() else None
        if coords is not None:
            return coords[mask], self.embedding_note + ", fibroblasts only"
        if mask.sum() >= MIN_CELLS_FIBRO_UMAP:
            try:
                coords = F.compute_umap(self.sub[mask], random_state=self.random_state)
                return coords, (f"UMAP of the {int(mask.sum()):,} plotted fibroblasts, computed for "
                                f"this report (random_state={self.random_state})")
            except Exception as exc:
                logger.warning("could not compute a fibroblast UMAP for the report: %s", exc)
        coords = self.coords()
        if coords is None:
            return None, self.embedding_note
        return coords[mask], self.embedding_note

    def figure(self, name: str, fn: Callable[[], str | None]) -> dict | None:
        try:
            uri = fn()
        except Exception as exc:
            logger.warning("report figure %r failed: %s", name, exc, exc_info=True)
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return {"uri": None, "error": f"could not be drawn ({type(exc).__name__}: {exc})",
                    "name": name}
        if uri is None:
            return None
        size = F.png_display_size(uri) or (None, None)
        return {"uri": uri, "error": None, "name": name, "width": size[0], "height": size[1]}


def _not_run(step: str, note: str) -> dict:
    return {"ran": False, "note": note or f"The {step} step left no record in this file."}
