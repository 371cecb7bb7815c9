"""Helpers of the command-line tests: run the CLI in-process, read its error lines, write
small inputs, build the shared pipeline inputs once, serve downloads from 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.server
import io
import re
import threading
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cafclassify.cli import main

REPO = Path(__file__).resolve().parents[1]

# =============================================================================== running


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``cafclassify <argv>`` in-process; return (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--threads", "1", *argv])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_cli_wording(msg: str) -> None:
    """A CLI error gives options (``--species human``), never API syntax (``species='human'``)."""
    import argparse

    from cafclassify.cli import build_parser

    step = re.match(r"^cafclassify (\S+): ", msg).group(1)
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest for a in subparsers.choices[step]._actions if a.option_strings}
    fix = msg.split("What to do:", 1)[-1]
    # the fix never; the problem only when it quotes a value ("min_genes=10" reports a threshold)
    found = [*re.finditer(r"(?<![\w.\-])([a-z][a-z0-9_]*)=", fix),
             *re.finditer(r"(?<![\w.\-])([a-z][a-z0-9_]*)=['\"]", msg)]
    api = [m.group(1) for m in found if m.group(1) in options or f"no_{m.group(1)}" in options]
    assert not api, f"API argument(s) {api} in a CLI message: {msg}"


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if re.match(r"^cafclassify \S+: error: ", ln)]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# =============================================================================== shared data


def quiet_threads() -> None:
    """One BLAS thread: on a loaded 2-core machine threaded BLAS makes training ~10x slower."""
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def write_counts_h5ad(path: Path, *, n_cells=60, n_genes=40, genes=None, barcodes=None, seed=0,
                      values=None) -> Path:
    rng = np.random.default_rng(seed)
    if genes is None:
        genes = ["COL1A1", "DCN", "PDGFRA", "ACTA2", "PTPRC", "EPCAM", "PECAM1"]
        genes += [f"GENE{i}" for i in range(n_genes - len(genes))]
    if barcodes is None:
        barcodes = [f"cell{i:04d}" for i in range(n_cells)]
    X = values if values is not None else rng.poisson(2.0, size=(len(barcodes), len(genes)))
    X = sp.csr_matrix(np.asarray(X, dtype=np.float32))
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=list(barcodes)), var=pd.DataFrame(index=list(genes)))
    a.write_h5ad(path)
    return path


class Shared:
    """Inputs that need the real pipeline (gated + scored data, a trained model); built once."""

    def __init__(self, root: Path):
        self.root = root
        self._scored: Path | None = None
        self._model: Path | None = None

    def scored(self) -> Path:
        """Simulated tumour data, read + gated + scored with the API (500 cells x 1500 genes)."""
        if self._scored is None:
            quiet_threads()
            import cafclassify as cc

            sim = cc.simulate(
                500, n_genes=1500, random_state=0,
                lineage_fractions={"fibroblast": 0.5, "immune": 0.2, "epithelial": 0.2,
                                   "endothelial": 0.05, "mural": 0.05},
            )
            raw = self.root / "sim.h5ad"
            sim.write_h5ad(raw)
            a = cc.read(raw)
            cc.gate(a)
            cc.score(a)
            self._scored = self.root / "scored.h5ad"
            a.write_h5ad(self._scored)
        return self._scored

    def model(self) -> Path:
        if self._model is None:
            quiet_threads()
            import cafclassify as cc

            a = ad.read_h5ad(self.scored())
            m = cc.train(a, random_state=0)
            self._model = self.root / "model.cafmodel"
            m.save(self._model)
        return self._model


# ---- downloads (local server on 127.0.0.1, never the internet) -------------------------

PAYLOAD = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 64


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/data.h5ad":
            body, ctype = PAYLOAD, "application/octet-stream"
        elif self.path == "/landing.h5ad":
            body, ctype = b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html"
        else:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def local_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
