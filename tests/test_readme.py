"""The README's Python examples run verbatim on the bundled data (in a temporary folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EXAMPLE = REPO / "resources" / "example"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.skipif(not (EXAMPLE / "wu2021_brca_CID4465_1564cells_counts.h5ad").exists(),
                    reason="bundled example data not in this checkout")
def test_readme_python_examples_run_verbatim(tmp_path):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 3, "the README lost its Python examples"
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "example").symlink_to(EXAMPLE)
    script = tmp_path / "readme_examples.py"
    # one namespace, in order, as a reader pasting them into one session
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "ARI " in r.stdout and "same-name agreement" in r.stdout
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="agreement"' in html and "celltype_minor" in html
    assert "cafclassify.classify(adata)  # Python API" in html  # the API's own provenance
    assert (tmp_path / "subtypes.png").read_bytes()[:4] == b"\x89PNG"
    assert "caf_subtype" in r.stdout  # the value counts of the model's calls
