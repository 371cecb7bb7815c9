"""Catalogue of bad inputs: each gives one clear error paragraph, exit 2, no traceback, no
partial output.

Every case (``tests/_bad_input_cases.py``) builds a small broken input in a temporary
folder; this file runs the command line on it (``cafclassify.cli.main``, in-process) and
checks that

* the exit status is 2 (user error),
* stderr holds exactly one ``cafclassify <step>: error: ...`` line that names the file,
  says what is wrong (an expected phrase) and what to do (``What to do:``),
* there is no Python traceback (unless ``--debug`` is given),
* nothing was written to the output folder (no final file, no temporary file).

A few inputs are *not* errors (duplicate barcodes/genes, already log-normalised data,
a subtype without seed cells): ``tests/test_inputs_handled.py`` checks that those runs
succeed and report what they did.

``docs/errors.md`` is generated from the same case table by running this file as a
script (``python tests/test_bad_inputs.py --write-docs docs/errors.md``), so the
catalogue shows the messages users really get.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import anndata as ad
import pytest

from _bad_input_cases import CASES, SERVER_URL, STEP_ERROR_INPUTS, Case, out_path
from _cli_fixtures import (
    REPO,
    Shared,
    assert_cli_wording,
    error_lines,
    files_under,
    local_server,
    run_cli,
    write_counts_h5ad,
)

# =============================================================================== fixtures


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return Shared(tmp_path_factory.mktemp("shared_inputs"))


@pytest.fixture(scope="module")
def server():
    with local_server() as url:
        SERVER_URL[:] = [url]
        yield url
        SERVER_URL.clear()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    from cafclassify.io import _fetch

    monkeypatch.setattr(_fetch, "_BACKOFF_SECONDS", 0.0)


def run_case(c: Case, tmp: Path, shared: Shared) -> tuple[int, str, list[Path], list[Path]]:
    """Build and run one case; return (status, stderr, expected-absent outputs, files before)."""
    argv, outputs = c.build(tmp, shared)
    before = files_under(tmp)
    code, _, err = run_cli(argv)
    return code, err, outputs, before


# =============================================================================== tests


def test_catalogue_has_at_least_25_error_cases():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_paragraph(c, tmp_path, shared, server, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pickle payload would `touch PWNED` here if executed
    code, err, outputs, before = run_case(c, tmp_path, shared)
    assert code == c.code, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, err
    msg = lines[0]
    assert c.names(tmp_path) in msg, msg
    if c.id in STEP_ERROR_INPUTS:  # API errors: the CLI names the input file first
        assert f"error: {tmp_path / STEP_ERROR_INPUTS[c.id]}: " in msg, msg
    for phrase in c.phrases:
        assert phrase.lower() in msg.lower(), (phrase, msg)
    assert "What to do:" in msg, msg
    fix = msg.split("What to do:", 1)[1].strip()
    assert len(fix) > 15, msg
    assert_cli_wording(msg)
    # nothing written: no final output, no temporary file, no new file anywhere in tmp
    for out in outputs:
        assert not out.exists(), out
    assert files_under(tmp_path) == before, set(files_under(tmp_path)) - set(before)
    assert not (tmp_path / "PWNED").exists()


def test_docs_catalogue_lists_every_case():
    """docs/errors.md is generated from CASES; regenerate it when a case is added."""
    text = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [c.id for c in CASES if f"| `{c.id}` |" not in text]
    assert not missing, f"run: python tests/test_bad_inputs.py --write-docs docs/errors.md ({missing})"


def test_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "nope.h5ad"
    code, _, err = run_cli(["read", str(missing), "-o", str(tmp_path / "o.h5ad")])
    assert code == 2 and "Traceback" not in err
    code, _, err = run_cli(["--debug", "read", str(missing), "-o", str(tmp_path / "o.h5ad")])
    assert code == 2
    assert "Traceback" in err
    assert len(error_lines(err)) == 1


def test_name_input_file_helper(tmp_path):
    from cafclassify._errors import DataError, InputFileError
    from cafclassify._validate import name_input_file

    f = write_counts_h5ad(tmp_path / "in.h5ad")
    exc = DataError("no cells are labelled 'fibroblast'.", path="obs['caf_lineage']",
                    fix="check the gate.")
    new = name_input_file(exc, str(f))
    assert type(new) is DataError and new.exit_code == 2 and new.fix == exc.fix
    assert new.message.startswith(f"{f}: obs['caf_lineage']: no cells are labelled")
    # errors that already name a file (or URL) are left alone
    named = InputFileError("broken.", path=f, fix="x")
    assert name_input_file(named, str(tmp_path / "other.h5ad")) is named
    url = InputFileError("404.", path="https://example.org/x", fix="x")
    assert name_input_file(url, str(f)) is url
    # no path at all: the file is added; several inputs are all named
    bare = DataError("bad.", fix="y")
    assert name_input_file(bare, [f, f]).message.startswith(f"{f}, {f}: bad.")
    assert name_input_file(bare, None) is bare
    # a path that does not exist (yet) is still a path: output-folder errors stay as they are
    out = InputFileError("cannot create the output folder.", path=tmp_path / "no" / "sub", fix="x")
    assert name_input_file(out, str(f)) is out
    missing = InputFileError("model file not found.", path="model.cafmodel", fix="x")
    assert name_input_file(missing, str(f)) is missing
    lib = DataError("no set matched.", path="signature library 'caf_v1'", fix="x")
    assert name_input_file(lib, str(f)).path == str(f)


# =============================================================================== docs


def _disk_full_row() -> tuple[Case, int, str]:
    """The message for a disk that fills up while the output is written (simulated)."""
    c = Case("disk_full", "the disk fills up while the output is written (simulated ENOSPC)",
             lambda t, s: ([], []), ("no space left",), lambda t: "out.h5ad")
    real = ad.AnnData.write_h5ad

    def full(self, filename, *args, **kwargs):
        raise OSError(28, "No space left on device")

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = write_counts_h5ad(tmp / "counts.h5ad")
        ad.AnnData.write_h5ad = full
        try:
            code, _, err = run_cli(["read", str(src), "-o", str(out_path(tmp))])
        finally:
            ad.AnnData.write_h5ad = real
        msg = error_lines(err)[0].replace(str(tmp), "<tmp>")
    return c, code, msg


def write_docs(path: Path) -> None:
    """Run every case and write the catalogue (case -> exact message) as Markdown."""
    rows = []
    with tempfile.TemporaryDirectory() as shared_dir, local_server() as url:
        SERVER_URL[:] = [url]
        from cafclassify.io import _fetch

        _fetch._BACKOFF_SECONDS = 0.0
        shared = Shared(Path(shared_dir))
        for c in CASES:
            with tempfile.TemporaryDirectory() as d:
                tmp = Path(d)
                cwd = os.getcwd()
                os.chdir(tmp)
                try:
                    code, err, _, _ = run_case(c, tmp, shared)
                finally:
                    os.chdir(cwd)
                lines = error_lines(err) or [err.strip().splitlines()[-1] if err.strip() else ""]
                msg = lines[0]
                for real, placeholder in ((str(tmp.resolve()), "<tmp>"), (str(tmp), "<tmp>"),
                                          (str(Path(shared_dir).resolve()), "<shared>"),
                                          (shared_dir, "<shared>"), (url, "http://127.0.0.1:<port>")):
                    msg = msg.replace(real, placeholder)
                rows.append((c, code, msg))
        rows.append(_disk_full_row())
    out = [
        "# Error catalogue",
        "",
        "What cafclassify says when an input is wrong. Each row is a case of",
        "`tests/test_bad_inputs.py`; the message column is the exact stderr line, produced",
        "by running the case (`python tests/test_bad_inputs.py --write-docs docs/errors.md`),",
        "with temporary folders shown as `<tmp>`. Every one of these exits with status 2,",
        "prints no traceback (add `--debug` to see one), and leaves no output file and no",
        "temporary file behind.",
        "",
        "| case | input | exit | message |",
        "|---|---|---|---|",
    ]
    for c, code, msg in rows:
        out.append(f"| `{c.id}` | {c.title} | {code} | {msg.replace('|', '&#124;')} |")
    out += [
        "",
        "## Inputs that are handled, not refused",
        "",
        "| input | what happens |",
        "|---|---|",
        "| duplicate cell barcodes | made unique with suffixes `-1`, `-2`, ...; a WARNING names "
        "them; `uns['cafclassify']['read']` records `n_duplicate_barcodes` and the names |",
        "| duplicate gene names | made unique the same way; the copies keep their symbol in "
        "`var['cafclassify_symbol']`; recorded as `n_duplicate_genes` |",
        "| a file whose extension lies (CSV named `.h5ad`) | the format is detected from the "
        "content and recorded in `uns['cafclassify']['read']['format']` |",
        "| already log-normalised values | used as they are (`value_type: lognorm`), not "
        "normalised twice; values of another log base or scale that the numbers identify "
        "(`log2(1 + TPM)`, `ln(1 + CPM)`, `log10`: the right base's inverse gives every cell "
        "the same total) are rewritten as `ln(1 + CP10k)`, the scale every step assumes, and "
        "the record says so (`normalization`, `value_type_evidence.log_scale`); in an AnnData "
        "built by hand and passed to `gate` they are used as they are, with a WARNING |",
        "| an `.h5ad` whose X holds a subset of `adata.raw`'s genes (scanpy's highly "
        "variable genes) | `adata.raw` is read (the signatures need every gene), with a "
        "WARNING and `details.source_matrix_reason` in the record; `--layer X` reads X |",
        "| integer counts that look like reads of a full-length protocol (median non-zero count "
        ">= 10; UMI counts sit at 1-3) | read as counts, with a WARNING that gene length biases read "
        "counts and that TPM of the same cells is the better input; `reads_like` and "
        "`median_nonzero` in `uns['cafclassify']['read']['value_type_evidence']`; the report repeats "
        "the warning |",
        "| TPM / CPM, or fractions of each cell's counts (linear normalised values: every cell "
        "has the same total) | detected as "
        "`linear`, rescaled to 10,000 per cell and log1p-transformed; a gene subset of them "
        "(totals vary) cannot be told from estimated counts and is refused with the "
        "`--value-type` fix |",
        "| a subtype with no confident seed cells | trained without it; listed in "
        "`absent_classes` (model summary and `uns['cafclassify']['classify']`), never called |",
        "| gene sets with too little coverage | skipped with a WARNING naming the missing "
        "genes; the coverage table is in `uns['cafclassify']['score']` |",
        "| an `.RData`/`.rda` file holding one single-cell object among other objects | that "
        "object is read; its name, class and version are recorded in "
        "`uns['cafclassify']['read']['details']` |",
        "",
        "## Runs that are stopped, outputs that would replace inputs",
        "",
        "SIGINT (Ctrl-C) and SIGTERM (what a cluster scheduler sends at its time limit) stop",
        "a step within moments, also in the middle of an `.h5ad` write; every temporary file",
        "(`.<name>.*.part.h5ad` and the part files of a second writer process) is removed,",
        "nothing is published under the output name, and the exit status is 130 / 143 with",
        "one line (`tests/test_no_loss.py`):",
        "",
        "```",
        "cafclassify read: stopped by SIGTERM; temporary files removed, no partial outputs "
        "were left behind.",
        "```",
        "",
        "No command writes onto one of its inputs: an output (`-o`, `--cells-csv`, `--table`,",
        "`--log-file`, the `fetch` destination, ...) that is an input, by the same path, a",
        "symbolic or a hard link, is refused before any work (exit 2; rows `output_is_input`,",
        "`output_is_link_to_input`, `fetch_onto_source` above), and the atomic writer checks",
        "it again at write time. `fetch` copies a local source (never moves it) and never",
        "removes a file it did not create. Messages of the command line name options",
        "(`--species human`); the same errors raised by the Python API name arguments",
        "(`species='human'`).",
        "",
        "## Workflow configuration",
        "",
        "`workflow/rules/common.smk` validates `config/config.yaml` and the dataset sheet",
        "against `workflow/schemas/*.schema.yaml` before any job runs: wrong types, unknown",
        "keys, unknown method names and dataset ids with spaces or shell characters",
        "(`my data`, `x;rm -rf ~`, `$(whoami)`, ...) are refused with one paragraph such as",
        "",
        "```",
        "The dataset sheet config/datasets.tsv is invalid: data row 1: id: '$(whoami)' does not",
        "match '^[A-Za-z0-9][A-Za-z0-9_.-]*$'. Fix the value (allowed values and defaults are",
        "documented in workflow/schemas/ and config/README.md) and rerun.",
        "```",
        "",
        "Dataset ids therefore never reach a shell command unquoted; every other value is",
        "passed through `shlex.join` (`cli_opts` in `common.smk`).",
        "",
    ]
    path.write_text("\n".join(out), encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover - documentation generator
    if len(sys.argv) == 3 and sys.argv[1] == "--write-docs":
        write_docs(Path(sys.argv[2]))
        print(f"wrote {sys.argv[2]} ({len(CASES)} cases)")
    else:
        print(f"usage: python {sys.argv[0]} --write-docs docs/errors.md")
        sys.exit(2)
