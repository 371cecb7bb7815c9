"""Writers of small Cell Ranger HDF5 files (v3 ``matrix/`` and v2 ``<genome>/`` layouts) for tests."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import scipy.sparse as sp


def write_10x_h5_v3(path: Path, adata: ad.AnnData, *, antibody: int = 0, antibody_at: int | None = None,
                    compressed: bool = False) -> Path:
    """Cell Ranger v3 file of ``adata`` (counts), plus ``antibody`` Antibody Capture features.

    The antibodies are appended after the genes, or inserted before gene ``antibody_at``;
    ``compressed`` stores the values as a chunked gzip dataset (as Cell Ranger does).
    """
    X = sp.csr_matrix(adata.X).astype(np.int32)
    names = list(adata.var_names)
    ftypes = ["Gene Expression"] * len(names)
    if antibody:
        at = len(names) if antibody_at is None else int(antibody_at)
        ab = sp.csr_matrix(np.full((adata.n_obs, antibody), 3, dtype=np.int32))
        X = sp.hstack([X[:, :at], ab, X[:, at:]]).tocsr()
        names = names[:at] + [f"CD{i}_TotalSeqB" for i in range(antibody)] + names[at:]
        ftypes = ftypes[:at] + ["Antibody Capture"] * antibody + ftypes[at:]
    csc = X.T.tocsc()  # genes x cells, compressed by cell
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = np.array(adata.obs_names, dtype="S")
        if compressed:
            g.create_dataset("data", data=csc.data.astype(np.int32), chunks=True, compression="gzip")
        else:
            g["data"] = csc.data.astype(np.int32)
        g["indices"] = csc.indices.astype(np.int64)
        g["indptr"] = csc.indptr.astype(np.int64)
        g["shape"] = np.array(csc.shape, dtype=np.int32)
        fg = g.create_group("features")
        fg["_all_tag_keys"] = np.array([b"genome"])
        fg["feature_type"] = np.array(ftypes, dtype="S")
        fg["genome"] = np.array([b"GRCh38"] * len(names))
        fg["id"] = np.array([f"ENSG{i:011d}" for i in range(len(names))], dtype="S")
        fg["name"] = np.array(names, dtype="S")
    return path


def write_10x_h5_v2(path: Path, adata: ad.AnnData) -> Path:
    """Cell Ranger v2 file (one genome group) of ``adata`` (counts)."""
    csc = sp.csr_matrix(adata.X).astype(np.int32).T.tocsc()
    with h5py.File(path, "w") as f:
        g = f.create_group("GRCh38")
        g["barcodes"] = np.array(adata.obs_names, dtype="S")
        g["data"] = csc.data
        g["indices"] = csc.indices.astype(np.int64)
        g["indptr"] = csc.indptr.astype(np.int64)
        g["shape"] = np.array(csc.shape, dtype=np.int32)
        g["genes"] = np.array([f"ENSG{i:011d}" for i in range(adata.n_vars)], dtype="S")
        g["gene_names"] = np.array(adata.var_names, dtype="S")
    return path
