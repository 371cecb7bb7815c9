"""Public ``score()``: resolve a signature library against the data and score every cell."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import ConfigError, DataError, SignatureError
from .._utils import get_matrix
from . import _gene_stats, _linear
from . import _kernels as kern
from ._methods import METHODS

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["score"]

logger = logging.getLogger(__name__)

_ON_LOW_COVERAGE = ("warn", "raise", "keep")


def _matrix(adata, layer: str | None):
    return get_matrix(adata, layer)


def _detect_value_type(X) -> str:
    from ..io._valuetype import detect_value_type

    return detect_value_type(X)


def _coverage_records(cov: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Coverage table -> {set: record}; h5ad-writable (no list of dicts, no None)."""
    df = cov.copy()
    if "set" not in df.columns:
        df = df.rename_axis("set").reset_index()
    out: dict[str, dict[str, Any]] = {}
    for rec in df.to_dict(orient="records"):
        name = str(rec.pop("set"))
        clean: dict[str, Any] = {}
        for k, v in rec.items():
            if isinstance(v, list | tuple | np.ndarray | pd.Index):
                clean[k] = [str(x) for x in v]
            elif isinstance(v, np.integer):
                clean[k] = int(v)
            elif isinstance(v, np.floating):
                clean[k] = float(v)
            elif isinstance(v, np.bool_):
                clean[k] = bool(v)
            elif v is None or (isinstance(v, float) and np.isnan(v)):
                clean[k] = "" if k in ("found", "missing", "status") else float("nan")
            else:
                clean[k] = v
        out[name] = clean
    return out


def _value_type_note(method: str, detected: str) -> tuple[str, str]:
    m = METHODS[method]
    if m.rank_based:
        note = (
            f"{method} is rank-based: any monotone per-cell transform (counts, CP10k, log1p) "
            f"gives the same scores, so the detected value type ({detected}) is used as is."
        )
        if detected == "scaled":
            logger.warning(
                "The matrix looks scaled (negative values): %s ranks zero-valued genes as "
                "ties at the bottom, which is meaningless after scaling. Score counts or "
                "log-normalised values (layer=...) instead.", method,
            )
            note += " WARNING: scaled values detected; ranks of zeros are not meaningful."
        return detected, note
    note = f"{method} averages values and expects log-normalised input (detected: {detected})."
    if detected != "lognorm":
        logger.warning(
            "%s expects log-normalised values but the matrix looks like %s; scores will be "
            "dominated by highly expressed genes. Normalise first (cafclassify.read does it for "
            "counts; or scanpy.pp.normalize_total + scanpy.pp.log1p) or choose a rank-based "
            "method (ucell, aucell).",
            method, detected,
        )
        note += " WARNING: input is not log-normalised."
    return "lognorm", note


def score(
    adata: AnnData,
    signatures: Any = "caf_v1",
    *,
    method: str = "ucell",
    layer: str | None = None,
    key_added: str = K.OBSM_SCORES,
    sets: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    species: str | None = None,
    symbol_column: str | None = None,
    max_rank: int = 1500,
    min_coverage: float | None = None,
    on_low_coverage: str = "warn",
    chunk_size: int = 20_000,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Score every cell for every gene set of a signature library.

    Gene sets are loaded with :func:`cafclassify.load_signatures` and matched to
    ``adata.var_names`` (symbols, aliases, orthologues) with
    :func:`cafclassify.match_signatures`; sets below ``min_coverage`` are handled
    by ``on_low_coverage``. The matrix is read in blocks of ``chunk_size`` cells and
    never densified; a backed AnnData (``anndata.read_h5ad(path, backed="r")``) is
    streamed from disk.

    Methods (see :func:`cafclassify.scoring.list_methods`):

    ``"ucell"`` (default)
        UCell, equal to pyucell (``ties_method="average"``) for the same ``max_rank``.
        Rank-based: counts and log-normalised values give the same scores.
    ``"aucell"``
        AUCell, equal to ``decoupler.mt.aucell`` (top 5% of detected genes; genes
        detected in no cell are left out of the ranking, ties broken by decoupler's
        seeded shuffle). Rank-based. Needs one extra pass over the cells.
    ``"scanpy"``
        Equal to ``scanpy.tl.score_genes`` with ``random_state`` (one call per set,
        default ``ctrl_size=50``, ``n_bins=25``). Expects log-normalised values.
        Needs one extra pass over the cells.
    ``"zmean"``
        Weighted mean of per-gene z-scores. Expects log-normalised values. Needs one
        extra pass over the cells.

    Signed sets (genes with negative weight, e.g. markers expected *off*): UCell
    uses ``max(0, U(up) - U(down))`` as UCell does; AUCell and scanpy use
    ``score(up) - score(down)``; zmean uses the weights directly.

    Parameters
    ----------
    adata
        Cells x genes. Not modified unless ``copy=False``.
    signatures
        Built-in library name, path to a gene-set file, dict of name -> genes, or a
        :class:`~cafclassify.SignatureLibrary`.
    method
        ``"ucell"``, ``"aucell"``, ``"scanpy"`` or ``"zmean"``.
    layer
        Score ``adata.layers[layer]`` instead of ``adata.X``.
    key_added
        Name of the ``obsm`` entry and of the ``uns`` record.
    sets, groups
        Restrict the library to these set names / groups (e.g. ``["subtype"]``).
    species, symbol_column
        Passed to gene matching (default: detected; ``var_names``).
    max_rank
        UCell rank cap (ignored by the other methods).
    min_coverage, on_low_coverage
        Minimum fraction of a set's genes found in the data (``None``: each set's own
        threshold from the library, the default), and what to do below it: ``"warn"`` (skip the
        set, log a WARNING), ``"raise"`` or ``"keep"``.
    chunk_size
        Cells per block (memory ~ chunk_size x (nnz per cell + sets)).
    random_state
        Seed of the control-gene draw (``"scanpy"``).
    copy
        Return a modified copy instead of writing into ``adata`` (not for backed AnnData).

    Returns
    -------
    ``None``, or the modified copy if ``copy=True``. Writes

    ``adata.obsm[key_added]``
        :class:`pandas.DataFrame` (cells x usable sets, ``float64``, index ``obs_names``).
    ``adata.uns["cafclassify"]["score"][key_added]``
        ``{"params": {...}, "coverage": {set: {n_genes, n_found, coverage, found,
        missing, status}}, "value_type_assumed": ..., "value_type_detected": ...,
        "value_type_note": ..., "method_details": {...}}``.

    For a backed AnnData the fields are written to the in-memory ``obsm``/``uns`` of
    the object; they are not written to the file (save with
    ``adata.write_h5ad(new_path)`` or use the CLI).

    Raises
    ------
    ConfigError
        Unknown ``method``/``on_low_coverage`` or invalid numeric options.
    SignatureError
        No set has enough genes in the data (or ``on_low_coverage="raise"``).
    DataError
        Missing layer, non-finite values, ``copy=True`` on a backed object.

    Examples
    --------
    >>> import cafclassify as cc  # doctest: +SKIP
    >>> cc.score(adata, method="ucell")  # doctest: +SKIP
    >>> adata.obsm["caf_scores"].head()  # doctest: +SKIP
    """
    if method not in METHODS:
        raise ConfigError(
            f"unknown scoring method {method!r}.",
            fix=f"choose one of {', '.join(METHODS)} (see cafclassify.scoring.list_methods()).",
        )
    if on_low_coverage not in _ON_LOW_COVERAGE:
        raise ConfigError(
            f"on_low_coverage must be one of {_ON_LOW_COVERAGE}, got {on_low_coverage!r}."
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    if isinstance(max_rank, bool) or not isinstance(max_rank, int | np.integer) or max_rank < 2:
        raise ConfigError(f"max_rank must be an integer >= 2, got {max_rank!r}.")
    if min_coverage is not None and not 0 <= float(min_coverage) <= 1:
        raise ConfigError(f"min_coverage must be between 0 and 1, got {min_coverage!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise ConfigError(f"key_added must be a non-empty string, got {key_added!r}.")

    if copy:
        if adata.isbacked:
            raise DataError(
                "copy=True is not supported for a backed AnnData (it would load the whole matrix).",
                path=str(adata.filename),
                fix="use copy=False (scores go to the in-memory obsm/uns of the object) "
                "or load it with adata.to_memory() first.",
            )
        adata = adata.copy()

    X, where = _matrix(adata, layer)

    from ..genesets import load_signatures
    from ..genesets._match import match_with_coverage

    library = load_signatures(signatures)
    if sets is not None or groups is not None:
        library = library.subset(names=None if sets is None else list(sets),
                                 groups=None if groups is None else list(groups))
    match_kw = dict(species=species, symbol_column=symbol_column, min_coverage=min_coverage,
                    on_low_coverage=on_low_coverage)
    matched, cov = match_with_coverage(library, adata, **match_kw)
    if not matched:
        raise SignatureError(
            f"none of the {len(library.sets)} gene sets has enough of its genes in the data "
            f"(min_coverage={min_coverage}).",
            path=f"signature library {library.name!r}",
            fix="check the species and the gene identifiers (var_names or symbol_column), "
            "or lower min_coverage.",
        )
    names = list(matched)
    isets = {n: (np.asarray(m.indices), np.asarray(m.weights, dtype=float)) for n, m in matched.items()}

    detected = _detect_value_type(X)
    assumed, note = _value_type_note(method, detected)
    logger.info("Scoring %d cells x %d sets with %s (%s, chunks of %d cells%s).",
                adata.n_obs, len(names), method, where, chunk_size,
                ", backed" if adata.isbacked else "")

    details: dict[str, Any] = {}
    if method == "ucell":
        scores = kern.ucell_scores(X, isets, max_rank=int(max_rank), chunk_size=int(chunk_size))
        details["max_rank"] = int(max_rank)
    else:
        stats = _gene_stats.gene_stats(X, chunk_size=int(chunk_size))
        if method == "aucell":
            nonempty = stats.n_nonzero > 0
            n_ranked = int(nonempty.sum())
            if n_ranked < 2:
                raise DataError("fewer than 2 genes are detected in any cell.", path=where)
            n_up = kern.default_n_up(n_ranked)
            for n in names:
                n_empty = int((~nonempty[isets[n][0]]).sum())
                if n_empty == isets[n][0].size:
                    logger.warning("aucell: no gene of set %r is detected in any cell; it scores 0.", n)
                elif n_empty:
                    logger.info("aucell: %d gene(s) of set %r are zero in every cell and are "
                                "left out, as decoupler does.", n_empty, n)
            scores = kern.aucell_scores(X, isets, n_up=n_up, tie_order="decoupler",
                                        gene_nonzero=stats.n_nonzero, chunk_size=int(chunk_size))
            details.update(n_up=n_up, n_ranked_genes=n_ranked, auc_threshold=0.05,
                           tie_break="decoupler: seeded shuffle (default_rng(0)) of detected genes")
        elif method == "scanpy":
            scores, controls = _linear.scanpy_scores(
                X, isets, gene_means=stats.scanpy_mean, random_state=random_state,
                chunk_size=int(chunk_size), return_controls=True,
            )
            details.update(ctrl_size=50, n_bins=25, random_state=random_state,
                           n_control_genes={n: int(sum(len(v) for v in c.values()))
                                            for n, c in controls.items()})
        else:  # zmean
            scores = _linear.zmean_scores(X, isets, gene_mean=stats.mean,
                                          gene_std=np.sqrt(stats.var), chunk_size=int(chunk_size))
            details.update(std_ddof=1)

    df = pd.DataFrame(scores, index=adata.obs_names.copy(), columns=pd.Index(names, dtype=object),
                      dtype=np.float64)
    adata.obsm[key_added] = df

    from .. import __version__

    params = {
        "method": method,
        "layer": "X" if layer is None else layer,
        "max_rank": int(max_rank),
        "chunk_size": int(chunk_size),
        "random_state": int(random_state) if random_state is not None else -1,
        "min_coverage": "per-set (library)" if min_coverage is None else float(min_coverage),
        "on_low_coverage": on_low_coverage,
        "species": species or "auto",
        "symbol_column": symbol_column or "",
        "sets_requested": [] if sets is None else [str(s) for s in sets],
        "groups_requested": [] if groups is None else [str(g) for g in groups],
        "sets_scored": names,
        "library": library.name,
        "library_version": library.version,
        "library_sha256": library.sha256,
        "reference": METHODS[method].reference,
        "reproduces": METHODS[method].exact_peer,
        "backed": bool(adata.isbacked),
        "cafclassify_version": __version__,
    }
    K.uns_section(adata, K.UNS_SCORE)[key_added] = {
        "params": params,
        "method_details": details,
        "coverage": _coverage_records(cov),
        "value_type_assumed": assumed,
        "value_type_detected": detected,
        "value_type_note": note,
    }
    logger.info("Wrote adata.obsm[%r] (%d sets) and uns['cafclassify']['score'][%r].",
                key_added, len(names), key_added)
    return adata if copy else None
