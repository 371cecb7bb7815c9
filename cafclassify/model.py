"""A trained CAF subtype classifier that can be saved, loaded and shared.

File format (``format_version`` 1)
----------------------------------
A model file is a ZIP archive (any file name; ``.cafmodel`` is conventional)
with these members, none of which executes code when read:

``metadata.json``
    ``format_version``, estimator kind, feature genes (symbols, in feature
    order), species, classes, signature library name/version/sha256, package
    version, scaling mode, calibration method and temperature, the training
    summary (CV metrics, ECE before/after calibration, reliability curves,
    seed counts, absent classes, parameters) and the input transform.
``arrays.npz``
    ``coef`` (classes x features), ``intercept``, ``feature_mean``,
    ``feature_scale`` and, for isotonic calibration, ``iso_x_<k>`` /
    ``iso_y_<k>``; read with ``allow_pickle=False``.
``estimator.skops`` (only for ``estimator="hgb"``)
    The HistGradientBoostingClassifier in the skops format, loaded with an
    explicit allow-list of trusted types (no pickle); anything else in the file
    is refused.

A file whose ``format_version`` is newer than this package understands raises
:class:`~cafclassify._errors.ModelError`. Every file is checked against this schema
before it is used (:func:`_check_schema`): types of every metadata field, array
shapes (``coef`` is classes x genes, one mean/scale per gene, one intercept per
class, one isotonic curve per class), finite numbers, unique genes and classes. A
damaged or hand-edited file is refused with an error naming the file and the field,
never with an internal error later at prediction time.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import ModelError
from .tl._calibration import IsotonicCalibrator, softmax_with_temperature

__all__ = ["FORMAT_VERSION", "CafModel"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_HGB_TRUSTED = frozenset({"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"})


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays (recursively) into JSON-serialisable Python objects."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        v = float(obj)
        return None if not np.isfinite(v) else v
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


@dataclass
class CafModel:
    """Trained CAF subtype classifier (see :func:`cafclassify.train`).

    Attributes
    ----------
    kind
        ``"logreg"`` (multinomial logistic regression), ``"sgd"`` (SGD
        log-loss, one-vs-rest) or ``"hgb"`` (histogram gradient boosting).
    genes
        Feature gene symbols, in feature order.
    classes
        Subtype classes the model can output.
    species
        Species of ``genes`` (``"human"``/``"mouse"``/``"unknown"``).
    feature_mean, feature_scale
        Per-gene scaling learned on the training fibroblasts.
    scaling
        ``"train"`` (apply the stored mean/scale) or ``"per_batch"``
        (standardise each new dataset/batch by its own fibroblasts; used for
        models pooled across batches).
    calibration
        ``"temperature"``, ``"isotonic"`` or ``"none"``.
    temperature
        Fitted temperature (1.0 when not used).
    summary
        Training summary (CV metrics, ECE, reliability data, seeds, parameters).
    """

    kind: str
    genes: list[str]
    classes: list[str]
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    estimator: Any = None
    species: str = "unknown"
    scaling: str = "train"
    calibration: str = "temperature"
    temperature: float = 1.0
    isotonic: IsotonicCalibrator | None = None
    signature_name: str = ""
    signature_version: str = ""
    signature_sha256: str = ""
    package_version: str = ""
    input_transform: str = "log1p_normalize_total_1e4_if_counts"
    summary: dict = field(default_factory=dict)
    path: str | None = None

    # ------------------------------------------------------------------ prediction
    @property
    def n_features(self) -> int:
        return len(self.genes)

    def decision_function(self, Z: np.ndarray) -> np.ndarray:
        """Uncalibrated logits for scaled features ``Z`` (cells x features)."""
        Z = np.asarray(Z, dtype=np.float64)
        if self.kind == "hgb":
            d = np.asarray(self.estimator.decision_function(Z), dtype=np.float64)
            if d.ndim == 1:  # binary HGB returns one column
                d = np.column_stack([-d / 2, d / 2])
            return d
        from threadpoolctl import threadpool_limits

        # one BLAS thread: bit-identical logits whatever the thread count
        with threadpool_limits(limits=1, user_api="blas"):
            return Z @ self.coef.T + self.intercept[None, :]

    def _raw_proba(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        if self.kind == "sgd":  # one-vs-rest sigmoids, renormalised (as sklearn does)
            p = 1.0 / (1.0 + np.exp(-logits / temperature))
            s = p.sum(axis=1, keepdims=True)
            s[s == 0] = 1.0
            return p / s
        return softmax_with_temperature(logits, temperature)

    def predict_proba(self, Z: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        """Class probabilities (rows sum to 1) for scaled features ``Z``."""
        logits = self.decision_function(Z)
        if not calibrated or self.calibration == "none":
            return self._raw_proba(logits, 1.0)
        if self.calibration == "temperature":
            return self._raw_proba(logits, self.temperature)
        return self.isotonic.transform(self._raw_proba(logits, 1.0))

    # ------------------------------------------------------------------ persistence
    def _metadata(self) -> dict:
        return _jsonable(
            {
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                "genes": list(self.genes),
                "classes": list(self.classes),
                "species": self.species,
                "scaling": self.scaling,
                "calibration": self.calibration,
                "temperature": float(self.temperature),
                "signature_name": self.signature_name,
                "signature_version": self.signature_version,
                "signature_sha256": self.signature_sha256,
                "package_version": self.package_version,
                "input_transform": self.input_transform,
                "n_isotonic": 0 if self.isotonic is None else len(self.isotonic.x),
                "summary": self.summary,
            }
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` (ZIP of JSON + npz [+ skops]); atomic.

        Returns
        -------
        The path written.
        """
        from ._atomic import atomic_path

        arrays = {
            "feature_mean": np.asarray(self.feature_mean, dtype=np.float64),
            "feature_scale": np.asarray(self.feature_scale, dtype=np.float64),
        }
        if self.kind != "hgb":
            arrays["coef"] = np.asarray(self.coef, dtype=np.float64)
            arrays["intercept"] = np.asarray(self.intercept, dtype=np.float64)
        if self.isotonic is not None:
            for k, (x, y) in enumerate(zip(self.isotonic.x, self.isotonic.y, strict=True)):
                arrays[f"iso_x_{k}"] = x
                arrays[f"iso_y_{k}"] = y
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with atomic_path(path, suffix=".zip") as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("metadata.json", json.dumps(self._metadata(), indent=1, sort_keys=True))
                zf.writestr("arrays.npz", buf.getvalue())
                if self.kind == "hgb":
                    import skops.io as sio

                    zf.writestr("estimator.skops", sio.dumps(self.estimator))
        logger.info("saved CafModel (%s, %d classes, %d genes) to %s", self.kind, len(self.classes),
                    len(self.genes), path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CafModel:
        """Read a model written by :meth:`save`; no code is executed.

        Raises
        ------
        ModelError
            If the file is missing, not a model file, from a newer format
            version, or contains untrusted objects.
        """
        p = Path(path)
        if not p.is_file():
            raise ModelError("model file not found.", path=p, fix="check the path to the .cafmodel file.")
        try:
            with zipfile.ZipFile(p) as zf:
                names = set(zf.namelist())
                if not {"metadata.json", "arrays.npz"} <= names:
                    raise ModelError(
                        "not a cafclassify model file (metadata.json/arrays.npz missing).", path=p,
                        fix="pass a file written by CafModel.save or `cafclassify train`.",
                    )
                meta = json.loads(zf.read("metadata.json").decode("utf-8"))
                if not isinstance(meta, dict):
                    raise _field_error(p, "metadata.json", f"is a JSON {type(meta).__name__}, not an object")
                fv = meta.get("format_version", -1)
                if isinstance(fv, bool) or not isinstance(fv, int):
                    raise _field_error(p, "format_version", f"is {fv!r}, not a whole number")
                if fv > FORMAT_VERSION:
                    raise ModelError(
                        f"the model file has format_version {fv}, newer than this cafclassify "
                        f"understands ({FORMAT_VERSION}).", path=p,
                        fix="upgrade cafclassify, or re-train the model with this version.",
                    )
                if fv < 1:
                    raise ModelError("the model file has no valid format_version.", path=p,
                                     fix="re-train and save the model.")
                _check_metadata(meta, p)
                with np.load(io.BytesIO(zf.read("arrays.npz")), allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
                _check_arrays(meta, arrays, p)
                estimator = None
                if meta["kind"] == "hgb":
                    if "estimator.skops" not in names:
                        raise _field_error(p, "estimator.skops", "is missing (needed for kind 'hgb')")
                    estimator = _load_skops(zf.read("estimator.skops"), p)
                    _check_estimator(estimator, meta, p)
        except zipfile.BadZipFile:
            raise ModelError("not a cafclassify model file (not a ZIP archive).", path=p,
                             fix="pass a file written by CafModel.save.") from None
        except (KeyError, ValueError, TypeError, OSError, json.JSONDecodeError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"the model file is damaged or incomplete ({type(exc).__name__}: {exc}).",
                             path=p, fix="re-save or re-train the model.") from None
        iso = None
        if meta.get("n_isotonic", 0):
            n = int(meta["n_isotonic"])
            iso = IsotonicCalibrator([arrays[f"iso_x_{k}"] for k in range(n)],
                                     [arrays[f"iso_y_{k}"] for k in range(n)])
        return cls(
            kind=meta["kind"], genes=list(meta["genes"]), classes=list(meta["classes"]),
            feature_mean=arrays["feature_mean"], feature_scale=arrays["feature_scale"],
            coef=arrays.get("coef"), intercept=arrays.get("intercept"), estimator=estimator,
            species=meta.get("species", "unknown"), scaling=meta.get("scaling", "train"),
            calibration=meta.get("calibration", "none"), temperature=float(meta.get("temperature", 1.0)),
            isotonic=iso, signature_name=meta.get("signature_name", ""),
            signature_version=meta.get("signature_version", ""),
            signature_sha256=meta.get("signature_sha256", ""),
            package_version=meta.get("package_version", ""),
            input_transform=meta.get("input_transform", ""),
            summary=meta.get("summary", {}), path=str(p),
        )

    def __repr__(self) -> str:
        return (f"CafModel(kind={self.kind!r}, classes={self.classes}, n_genes={len(self.genes)}, "
                f"calibration={self.calibration!r}, signatures={self.signature_name!r})")


# --------------------------------------------------------------------------- schema

_KINDS = ("logreg", "sgd", "hgb")
_SCALINGS = ("train", "per_batch")
_CALIBRATIONS = ("temperature", "isotonic", "none")
_SPECIES = ("human", "mouse", "unknown")
_TEXT_FIELDS = ("signature_name", "signature_version", "signature_sha256", "package_version",
                "input_transform")


def _field_error(path: Path, field_name: str, problem: str) -> ModelError:
    return ModelError(
        f"the model file is damaged or was edited: field {field_name!r} {problem}.",
        path=path,
        fix="use the model file exactly as `cafclassify train` (CafModel.save) wrote it, or "
        "re-train the model.",
    )


def _string_list(meta: dict, key: str, path: Path, *, minimum: int, unique: bool = True) -> list[str]:
    value = meta.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _field_error(path, key, "is not a list of non-empty names")
    if len(value) < minimum:
        raise _field_error(path, key, f"has {len(value)} entries (at least {minimum} needed)")
    if unique and len(set(value)) < len(value):
        dup = sorted({v for v in value if value.count(v) > 1})[:5]
        raise _field_error(path, key, f"lists names more than once ({', '.join(dup)})")
    return value


def _check_metadata(meta: dict, path: Path) -> None:
    """Types and values of the metadata fields (the schema of format_version 1)."""
    if meta.get("kind") not in _KINDS:
        raise _field_error(path, "kind", f"is {meta.get('kind')!r}, not one of {list(_KINDS)}")
    _string_list(meta, "genes", path, minimum=1, unique=False)
    _string_list(meta, "classes", path, minimum=2)
    for key, allowed in (("scaling", _SCALINGS), ("calibration", _CALIBRATIONS), ("species", _SPECIES)):
        if key in meta and meta[key] not in allowed:
            raise _field_error(path, key, f"is {meta[key]!r}, not one of {list(allowed)}")
    t = meta.get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, int | float) or not np.isfinite(t) or t <= 0:
        raise _field_error(path, "temperature", f"is {t!r}, not a positive number")
    n_iso = meta.get("n_isotonic", 0)
    if isinstance(n_iso, bool) or not isinstance(n_iso, int) or n_iso < 0:
        raise _field_error(path, "n_isotonic", f"is {n_iso!r}, not a whole number >= 0")
    if meta.get("calibration") == "isotonic" and n_iso != len(meta["classes"]):
        raise _field_error(path, "n_isotonic", f"is {n_iso} for {len(meta['classes'])} classes "
                           "with isotonic calibration (one curve per class)")
    for key in _TEXT_FIELDS:
        if key in meta and not isinstance(meta[key], str):
            raise _field_error(path, key, f"is a {type(meta[key]).__name__}, not text")
    if "summary" in meta and not isinstance(meta["summary"], dict):
        raise _field_error(path, "summary", f"is a {type(meta['summary']).__name__}, not an object")


def _check_array(arrays: dict, key: str, shape: tuple[int, ...], path: Path) -> None:
    if key not in arrays:
        raise _field_error(path, f"arrays.npz:{key}", "is missing")
    a = arrays[key]
    if a.dtype.kind not in "fiu":
        raise _field_error(path, f"arrays.npz:{key}", f"holds {a.dtype} values, not numbers")
    if a.shape != shape:
        raise _field_error(path, f"arrays.npz:{key}", f"has shape {a.shape}, expected {shape} "
                           "from the genes and classes listed in metadata.json")
    if not np.isfinite(a).all():
        raise _field_error(path, f"arrays.npz:{key}", "holds NaN or infinite values")


def _check_arrays(meta: dict, arrays: dict, path: Path) -> None:
    """Shapes agree with the gene and class lists (gene count = coefficient columns)."""
    n_genes, n_classes = len(meta["genes"]), len(meta["classes"])
    _check_array(arrays, "feature_mean", (n_genes,), path)
    _check_array(arrays, "feature_scale", (n_genes,), path)
    if meta["kind"] != "hgb":
        _check_array(arrays, "coef", (n_classes, n_genes), path)
        _check_array(arrays, "intercept", (n_classes,), path)
    for k in range(int(meta.get("n_isotonic", 0))):
        x, y = arrays.get(f"iso_x_{k}"), arrays.get(f"iso_y_{k}")
        if x is None or y is None or x.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise _field_error(path, f"arrays.npz:iso_x_{k}/iso_y_{k}",
                               "is missing or the two curves differ in length")


def _check_estimator(estimator: Any, meta: dict, path: Path) -> None:
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is not None and int(n_in) != len(meta["genes"]):
        raise _field_error(path, "estimator.skops", f"expects {n_in} features but the model has "
                           f"{len(meta['genes'])} genes")
    if not hasattr(estimator, "decision_function"):
        raise _field_error(path, "estimator.skops", "is not a classifier")


def _load_skops(data: bytes, path: Path):
    import skops.io as sio

    untrusted = set(sio.get_untrusted_types(data=data))
    extra = untrusted - _HGB_TRUSTED
    if extra:
        raise ModelError(
            f"the model file contains object types that are not on the allow-list: {sorted(extra)}.",
            path=path, fix="only load model files you trust; re-train the model with cafclassify.",
        )
    return sio.loads(data, trusted=sorted(untrusted))
