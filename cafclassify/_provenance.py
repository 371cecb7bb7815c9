"""Provenance records in ``uns["cafclassify"]["provenance"]``, for the CLI and the Python API.

Every analysis step stamps one record (step, exact command or call, parameters, input
checksums, signature library and hash, seed, UTC date, package versions) and moves the
previous record into ``provenance["history"]``, so a saved object always says which
analysis produced it, whether it ran on the command line or in a notebook.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any

__all__ = ["api_record", "stamp"]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("cafclassify", "scanpy", "anndata", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - always installed with us
            out[pkg] = "not installed"
    return out


def _h5ad_safe(value: Any) -> Any:
    """Make a value storable in ``.uns`` with any supported anndata version."""
    if value is None:
        return "None"
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays/scalars
        value = value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _h5ad_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_h5ad_safe(v) for v in value]
        if all(isinstance(v, str) for v in items) and items:
            return items
        return json.dumps(items)
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _signature_info(spec: str | None) -> dict[str, str]:
    if spec is None:
        return {"name": "None", "sha256": "None", "version": "None"}
    from .genesets import load_signatures

    lib = load_signatures(spec)
    return {"name": lib.name, "sha256": lib.sha256, "version": lib.version}


def _stamp(adata, record: dict[str, Any]) -> None:
    """Set ``uns["cafclassify"]["provenance"]``, moving the previous record into its history."""
    from ._keys import UNS, UNS_PROVENANCE

    root = adata.uns.setdefault(UNS, {})
    previous = root.get(UNS_PROVENANCE)
    history: dict[str, Any] = {}
    if isinstance(previous, dict):
        history = dict(previous.get("history", {}) or {})
        prev = {k: v for k, v in previous.items() if k != "history"}
        history[f"{len(history) + 1:02d}_{prev.get('step', 'step')}"] = prev
    record = dict(record)
    record["history"] = history
    root[UNS_PROVENANCE] = _h5ad_safe(record)



stamp = _stamp


def api_record(step: str, params: dict[str, Any], *, signatures: str | None = None,
               inputs: list[str] | None = None, seed: int | None = None) -> dict[str, Any]:
    """The provenance record of a step run through the Python API (``cafclassify.<step>``)."""
    from .io._fetch import file_sha256

    shown = ", ".join(f"{k}={v!r}" for k, v in params.items() if not hasattr(v, "obs"))
    paths = [Path(p) for p in (inputs or [])]
    sig = _signature_info(signatures) if signatures is not None else _signature_info(None)
    return {
        "step": step,
        "package_version": _versions()["cafclassify"],
        "command": f"cafclassify.{step}(adata{', ' + shown if shown else ''})  # Python API",
        "parameters": _h5ad_safe({k: v for k, v in params.items() if not hasattr(v, "obs")}),
        "inputs": [str(p) for p in paths],
        "input_sha256": [file_sha256(p) for p in paths if p.is_file()],
        "signature_set": sig["name"],
        "signature_version": sig["version"],
        "signature_sha256": sig["sha256"],
        "seed": int(seed or 0),
        "run_date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
