"""Enforce the scverse API conventions over the whole public API."""

from __future__ import annotations

import inspect
import logging

import pytest

import cafclassify

# functions that take an AnnData first and write into it
ADATA_FUNCS = ["qc", "filter_cells", "gate", "score", "classify"]
# at most this many positional parameters (adata + one obvious argument)
MAX_POSITIONAL = 2


@pytest.mark.parametrize("name", ADATA_FUNCS)
def test_adata_first_keyword_only_copy(name):
    func = getattr(cafclassify, name)
    params = list(inspect.signature(func).parameters.values())
    assert params[0].name == "adata"
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    assert len(positional) <= MAX_POSITIONAL, f"{name}: too many positional parameters"
    names = {p.name for p in params}
    assert "copy" in names, f"{name} must offer copy="
    copy = inspect.signature(func).parameters["copy"]
    assert copy.default is False
    assert copy.kind == copy.KEYWORD_ONLY


@pytest.mark.parametrize("name", [n for n in cafclassify.__all__ if n != "__version__"])
def test_public_names_resolve_and_are_documented(name):
    obj = getattr(cafclassify, name)
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    if inspect.isfunction(obj):
        params = [p for p in inspect.signature(obj).parameters if p not in ("args", "kwargs")]
        if params:
            assert "Parameters\n----------" in doc, f"{name}: numpydoc Parameters section missing"
        assert "Returns\n-------" in doc, f"{name}: numpydoc Returns section missing"


def test_key_added_where_results_are_stored():
    for name in ["gate", "score", "classify"]:
        assert "key_added" in inspect.signature(getattr(cafclassify, name)).parameters, name


def test_library_never_configures_logging_at_import():
    root = logging.getLogger()
    before = list(root.handlers)
    for name in cafclassify.__all__:
        if name != "__version__":
            getattr(cafclassify, name)
    assert list(root.handlers) == before
