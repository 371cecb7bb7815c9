"""Value types decided from the values, stated, and refused where they cannot be right.

Boolean / 0-1 matrices are not counts, float values beyond float32's range cannot be
normalised, and a ``layers['counts']`` that does not hold counts loses the name, in
``read()``, the streamed reader and the backed reader, and on the command line.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cafclassify import _keys as K
from cafclassify._errors import InputFileError
from cafclassify.cli import main
from cafclassify.io import read, read_backed, value_type_details
from cafclassify.io._stream import read_to_h5ad
from cafclassify.io._values import LAYER_NOT_COUNTS

GENES = ["COL1A1", "COL1A2", "DCN", "LUM", "PDGFRA", "ACTA2", "PTPRC", "EPCAM", "CD3E", "MYH11",
         "RGS5", "PECAM1"]


def _adata(X, **layers) -> ad.AnnData:
    n = X.shape[0]
    return ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
                      var=pd.DataFrame(index=GENES[: X.shape[1]]), layers=layers)


def _binary(dtype, n=60, seed=0):
    return sp.csr_matrix((np.random.default_rng(seed).random((n, len(GENES))) < 0.4).astype(dtype))


@pytest.mark.parametrize("dtype", [bool, np.int32, np.float32])
def test_binary_matrix_refused_as_counts(tmp_path, dtype):
    p = tmp_path / "binary.h5ad"
    _adata(_binary(dtype)).write_h5ad(p)
    assert value_type_details(_binary(dtype))["binary"]
    with pytest.raises(InputFileError, match="detected / not-detected values, not counts"):
        read(p)
    with pytest.raises(InputFileError, match="detected / not-detected"):
        read_to_h5ad(p, tmp_path / "out.h5ad")
    assert not (tmp_path / "out.h5ad").exists()
    if dtype is bool:  # a boolean matrix is never counts, whatever the caller says
        with pytest.raises(InputFileError, match="detected / not-detected"):
            read(p, value_type="counts")
    else:  # 0/1 integers: the caller may say they are (very shallow) counts
        assert read(p, value_type="counts").uns[K.UNS][K.UNS_READ]["value_type"] == "counts"


def test_few_ones_are_still_counts():
    """Below BINARY_MIN_VALUES non-zero values, max 1 is not evidence of a binary matrix."""
    X = np.zeros((5, 12), dtype=np.float32)
    X[np.arange(5), np.arange(5)] = 1
    d = value_type_details(X)
    assert d["value_type"] == "counts" and not d["binary"]


def test_float_counts_beyond_float32_refused(tmp_path, capsys):
    X = np.random.default_rng(0).poisson(3, (40, len(GENES))).astype(np.float64)
    X[7, 3] = 1e39
    p = tmp_path / "huge.h5ad"
    _adata(X).write_h5ad(p)
    with pytest.raises(InputFileError, match="beyond what a float32 expression matrix can hold"):
        read(p)
    with pytest.raises(InputFileError, match="float32"):
        read_to_h5ad(p, tmp_path / "s.h5ad", chunk_size=10)
    # row totals beyond float32 although every value fits
    X2 = np.random.default_rng(0).poisson(3, (40, len(GENES))).astype(np.float64)
    X2[5, :] = 3e38
    _adata(X2).write_h5ad(p)
    with pytest.raises(InputFileError, match=r"1 cell\(s\) cannot be normalised"):
        read(p)
    code = main(["read", str(p), "-o", str(tmp_path / "o.h5ad")])
    err = capsys.readouterr().err
    assert code == 2
    assert "float32" in err and "internal error" not in err and "NaN" not in err


def _lognorm_with_counts_layer():
    rng = np.random.default_rng(1)
    L = np.log1p(rng.poisson(3, (50, len(GENES))) * 1.37).astype(np.float32)
    return _adata(sp.csr_matrix(L), counts=sp.csr_matrix(L * 2))


def test_non_integer_counts_layer_loses_the_name(tmp_path, caplog):
    p = tmp_path / "lognorm.h5ad"
    _lognorm_with_counts_layer().write_h5ad(p)
    with caplog.at_level(logging.WARNING, logger="cafclassify"):
        a = read(p)
    assert K.LAYER_COUNTS not in a.layers and LAYER_NOT_COUNTS in a.layers
    rec = a.uns[K.UNS][K.UNS_READ]["details"]["counts_layer"]
    assert rec["renamed_to"] == LAYER_NOT_COUNTS and rec["value_type"] == "lognorm"
    assert any("does not hold counts" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    # streamed: the same renaming of the copied layer
    read_to_h5ad(p, tmp_path / "s.h5ad")
    s = ad.read_h5ad(tmp_path / "s.h5ad")
    assert K.LAYER_COUNTS not in s.layers and LAYER_NOT_COUNTS in s.layers
    # backed: cannot rename on disk; recorded and warned
    b = read_backed(p)
    try:
        assert b.uns[K.UNS][K.UNS_READ]["counts_layer"]["not_counts"]
    finally:
        b.file.close()


def test_integer_counts_layer_kept(tmp_path):
    rng = np.random.default_rng(2)
    C = rng.poisson(3, (50, len(GENES))).astype(np.float32)
    C[:, 0] += 1
    L = np.log1p(C / C.sum(1, keepdims=True) * 1e4)
    p = tmp_path / "ok.h5ad"
    _adata(sp.csr_matrix(L), counts=sp.csr_matrix(C)).write_h5ad(p)
    a = read(p)
    assert K.LAYER_COUNTS in a.layers and LAYER_NOT_COUNTS not in a.layers


def test_qc_does_not_take_a_normalised_counts_layer_for_counts(caplog):
    """A counts layer that is not counts (e.g. written by another tool) is not QC's counts."""
    from cafclassify.pp._qc_metrics import _choose_matrix

    a = _lognorm_with_counts_layer()
    with caplog.at_level(logging.WARNING, logger="cafclassify"):
        _, desc, vt = _choose_matrix(a, None)
    assert desc == "X" and vt == "lognorm"
    assert any("does not hold counts" in r.message for r in caplog.records)


def _umi_and_reads(n=80, seed=3):
    """The same cells as shallow UMI counts and as full-length reads of them (each count x a
    per-gene length factor x amplification noise x 40, as benchmarks/real_designs.py)."""
    rng = np.random.default_rng(seed)
    umi = rng.poisson(rng.gamma(0.4, 1.5, len(GENES)), (n, len(GENES))).astype(np.float64)
    length = np.exp(rng.normal(0, 0.5, len(GENES)))
    reads = np.round(umi * length * rng.gamma(4.0, 0.25, umi.shape) * 40)
    return umi.astype(np.float32), reads.astype(np.float32)


def test_counts_of_reads_are_read_as_counts_with_a_warning(tmp_path, caplog):
    """Read counts of a full-length protocol are counts, but gene length biases them: read()
    (in memory, streamed, backed) says so and records the evidence; UMI counts are silent."""
    from cafclassify.io._valuetype import READS_MIN_MEDIAN_NONZERO
    from cafclassify.report._warnings import collect_warnings

    umi, reads = _umi_and_reads()
    for name, X, reads_like in (("umi", umi, False), ("reads", reads, True)):
        p = tmp_path / f"{name}.h5ad"
        _adata(sp.csr_matrix(X)).write_h5ad(p)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cafclassify"):
            a = read(p)
            read_to_h5ad(p, tmp_path / f"{name}_streamed.h5ad", chunk_size=25)
            b = read_backed(p)
            b.file.close()
        warned = [r for r in caplog.records if "reads of a full-length protocol" in r.message]
        for rec in (a.uns[K.UNS][K.UNS_READ], b.uns[K.UNS][K.UNS_READ],
                    ad.read_h5ad(tmp_path / f"{name}_streamed.h5ad").uns[K.UNS][K.UNS_READ]):
            ev = rec["value_type_evidence"]
            assert rec["value_type"] == "counts"
            assert ev["reads_like"] is reads_like
            assert (ev["median_nonzero"] >= READS_MIN_MEDIAN_NONZERO) is reads_like
        keys = {w["key"] for w in collect_warnings(a)}
        if reads_like:
            assert len(warned) == 3 and all(str(p) in r.message and "TPM" in r.message for r in warned)
            assert "reads" in keys
            # still counts: kept as such and normalised from them
            np.testing.assert_array_equal(a.layers[K.LAYER_COUNTS].toarray(), X)
        else:
            assert warned == [] and "reads" not in keys
