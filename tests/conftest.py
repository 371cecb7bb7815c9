"""Shared pytest fixtures (keep small: module-specific fixtures live in their test files)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI checks out the repository with the read-only shared data folder beside it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (holds Snakefile, config/, resources/)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with the small real .h5ad files; skips the test if it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not found (expected beside the repository)")
    return SHARED_DATA


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per core, at most 4.

    Each worker imports scanpy and builds its own module fixtures (a few hundred MB), and
    the workflow tests run ``snakemake --cores 2`` themselves, so more workers than 4
    buy little and cost memory on a large machine.
    """
    import os

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, n))
