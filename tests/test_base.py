"""Tests for the shared base: user-facing errors and atomic output."""

from __future__ import annotations

import os
import stat

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

from cafclassify._atomic import atomic_path, write_h5ad_atomic, write_text_atomic
from cafclassify._errors import CafClassifyError, InputFileError
from cafclassify._keys import uns_section


def test_error_message_names_path_problem_and_fix():
    err = InputFileError("the file is empty.", path="/data/x.h5ad", fix="download it again.")
    assert str(err) == "/data/x.h5ad: the file is empty. What to do: download it again."
    assert isinstance(err, CafClassifyError)
    assert isinstance(err, ValueError)
    assert err.exit_code == 2


def test_error_without_path_or_fix():
    assert str(CafClassifyError("bad thing.")) == "bad thing."


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp != target
        tmp.write_text("hello")
        assert not target.exists()
    assert target.read_text() == "hello"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.h5ad"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_previous_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old complete file")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("new but incomplete")
        raise KeyboardInterrupt
    assert target.read_text() == "old complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_files_get_normal_permissions(tmp_path):
    out = write_text_atomic("x", tmp_path / "a.txt")
    mode = stat.S_IMODE(os.stat(out).st_mode)
    assert mode & stat.S_IRGRP  # not the 0600 of mkstemp


def test_write_h5ad_atomic_roundtrip(tmp_path):
    a = ad.AnnData(sparse.random(20, 10, density=0.3, format="csr", random_state=0))
    out = write_h5ad_atomic(a, tmp_path / "a.h5ad")
    b = ad.read_h5ad(out)
    np.testing.assert_allclose(b.X.toarray(), a.X.toarray())


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_folder_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputFileError, match="not writable"):
            write_text_atomic("x", ro / "a.txt")
    finally:
        ro.chmod(0o700)


def test_uns_section_creates_nested_dicts():
    a = ad.AnnData(np.zeros((2, 2)))
    sec = uns_section(a, "gate")
    sec["x"] = 1
    assert a.uns["cafclassify"]["gate"]["x"] == 1
    assert uns_section(a, "gate") is sec


def test_output_under_a_file_is_a_clear_error(tmp_path):
    # works as root too: a regular file cannot be an output folder
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(InputFileError, match="cannot create the output folder"):
        write_text_atomic("x", blocker / "out" / "a.txt")
