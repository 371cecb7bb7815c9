"""Out-of-core simulation: :func:`simulate_to_h5ad` writes the synthetic tumour to ``.h5ad``.

The cells are prepared once, as for :func:`~cafclassify.datasets.simulate`; then
chunks of cells are drawn as CSR, in this process or in forked worker processes
(:func:`_chunk_worker`, a module-level function reading the prepared design from
the module-level ``_FORK_STATE``), and appended to the on-disk sparse ``X``.
Counts come in fixed, separately seeded blocks (see
:mod:`cafclassify.datasets._simulate`), so the file is the same whatever
``chunk_size`` and ``n_jobs``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .._errors import DataError
from ._simulate import _count_blocks, _prepare

__all__ = ["simulate_to_h5ad"]

logger = logging.getLogger(__name__)


# state shared with forked worker processes of simulate_to_h5ad(n_jobs > 1)
_FORK_STATE: dict = {}


def _chunk_worker(bounds: tuple[int, int]) -> sp.csr_matrix:
    st = _FORK_STATE
    start, stop = bounds
    chunk = sp.vstack(list(_count_blocks(st["design"], st["A"], st["libsize"], st["ambient"],
                                         st["random_state"], start, stop)), format="csr")[:, st["order"]]
    chunk = sp.csr_matrix(chunk, dtype=np.int32)
    chunk.sort_indices()
    return chunk


def simulate_to_h5ad(
    path: str | os.PathLike,
    n_cells: int,
    *,
    chunk_size: int = 50000,
    compression: str | None = "gzip",
    n_jobs: int = 1,
    **kwargs,
) -> Path:
    """Simulate straight into an ``.h5ad`` file, chunk by chunk.

    Never holds a dense matrix or the full sparse matrix: each chunk of cells is
    drawn as CSR and appended to the on-disk sparse ``X`` (anndata's
    ``sparse_dataset(...).append``). The file is written atomically (temporary
    file + rename). With the same parameters the result equals
    :func:`simulate` exactly, whatever ``chunk_size``.

    Parameters
    ----------
    path
        Output ``.h5ad`` path.
    n_cells
        Number of cells.
    chunk_size
        Cells per written chunk.
    compression
        h5py compression for ``X`` (``"gzip"`` or ``None``).
    n_jobs
        Worker processes drawing chunks in parallel (forked; Linux/macOS). Every block of
        cells has its own seed, so the file is the same for any ``n_jobs``.
    **kwargs
        Everything else is passed to :func:`simulate`'s options.

    Returns
    -------
    The path written.
    """
    import h5py
    from anndata.io import sparse_dataset, write_elem

    from .._atomic import atomic_path

    if int(chunk_size) < 1:
        raise DataError(f"chunk_size must be >= 1, got {chunk_size}.", fix="pass a positive chunk size.")
    random_state = int(kwargs.pop("random_state", 0))
    opts = {
        "species": "human", "n_genes": 15000, "lineage_fractions": None, "subtype_fractions": None,
        "signatures": "caf_v1", "program_strength": 1.0, "overlap": 0.25, "p_informative": 0.75,
        "n_batches": 1,
    }
    unknown = set(kwargs) - set(opts)
    if unknown:
        raise DataError(f"unknown simulate option(s): {sorted(unknown)}.", fix=f"use {sorted(opts)}.")
    opts.update(kwargs)
    design, obs, A, libsize, ambient, order, var, params = _prepare(
        n_cells, opts["species"], opts["n_genes"], opts["lineage_fractions"], opts["subtype_fractions"],
        opts["signatures"], opts["program_strength"], opts["overlap"], opts["p_informative"],
        opts["n_batches"], random_state,
    )
    n = int(n_cells)
    ds_kw = {"compression": compression} if compression else {}
    with atomic_path(path, suffix=".h5ad") as tmp:
        skeleton = ad.AnnData(obs=obs, var=var)
        skeleton.uns["simulation"] = params
        skeleton.write_h5ad(tmp)
        with h5py.File(tmp, "a") as f:
            if "X" in f:
                del f["X"]
            written = False
            bounds = [(start, min(n, start + int(chunk_size))) for start in range(0, n, int(chunk_size))]
            _FORK_STATE.update(design=design, A=A, libsize=libsize, ambient=ambient,
                               random_state=random_state, order=order)
            pool = None
            try:
                if int(n_jobs) > 1 and len(bounds) > 1:
                    import multiprocessing as mp

                    pool = mp.get_context("fork").Pool(int(n_jobs))
                    chunks = pool.imap(_chunk_worker, bounds)  # in order
                else:
                    chunks = map(_chunk_worker, bounds)
                for (start, stop), chunk in zip(bounds, chunks, strict=True):
                    if not written:
                        from ..io._h5matrix import wide_indptr

                        write_elem(f, "X", wide_indptr(chunk, n * len(design.genes)), dataset_kwargs=ds_kw)
                        written = True
                    else:
                        sparse_dataset(f["X"]).append(chunk)
                    logger.info("simulate_to_h5ad: wrote cells %d-%d of %d", start, stop, n)
            finally:
                if pool is not None:
                    pool.terminate()
                _FORK_STATE.clear()
    return Path(path)
