"""A full disk ends a step cleanly: exit status 2, one paragraph, no traceback, no crash.

The outputs are written on a 2 MB tmpfs (CI runs as root and may mount one; elsewhere
the tests are skipped with the reason). The steps run in a subprocess, so that a
crash of the process (HDF5 segfaulting on the handles of a file it failed to flush,
exit status 139) would be seen.
"""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from cafclassify._atomic import atomic_path, write_text_atomic
from cafclassify._errors import InputFileError

MESSAGE = "cannot write the output file (No space left on device); nothing was written under this name."


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    """A 2 MB tmpfs, unmounted afterwards."""
    d = tmp_path_factory.mktemp("tiny_fs")
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs to fill up ({exc}); needs root (CI runs as root)")
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up ({res.stderr.strip()}); needs root (CI runs as root)")
    yield d
    subprocess.run(["umount", str(d)], check=False, timeout=30)


@pytest.fixture(scope="module")
def counts_h5ad(tmp_path_factory):
    from cafclassify.datasets import simulate

    p = tmp_path_factory.mktemp("input") / "sim.h5ad"
    simulate(n_cells=1000, n_genes=2000, random_state=0).write_h5ad(p)  # ~11 MB once read
    return p


def _cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cafclassify.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("how", [["--backed", "no", "--compression", "none"],
                                 ["--backed", "no", "--compression", "gzip"],
                                 ["--backed", "yes", "--compression", "none"]],
                         ids=["in_memory", "in_memory_gzip", "streamed"])
def test_full_disk_exits_2_with_one_paragraph(full_disk, counts_h5ad, how):
    out = full_disk / "out.h5ad"
    res = _cli("read", counts_h5ad, "-o", out, *how)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    errors = [ln for ln in res.stderr.splitlines() if "INFO]" not in ln]
    assert errors == [f"cafclassify read: error: {out}: {MESSAGE} What to do: free some disk space, "
                      "or choose an output path (not an existing folder) in a folder you can write "
                      "to, and rerun."], res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "HDF5" not in res.stderr
    assert list(full_disk.iterdir()) == []  # nothing left behind


def test_full_disk_text_output(full_disk):
    """Any write OSError in an atomic write becomes the one-paragraph error (here a text file)."""
    with pytest.raises(InputFileError, match="No space left on device"):
        write_text_atomic("x" * (3 << 20), full_disk / "big.txt")
    assert list(full_disk.iterdir()) == []


def test_other_write_errors_are_user_errors(tmp_path):
    """A write error naming the temporary file (e.g. EIO from HDF5) is a user error, not a bug."""
    with pytest.raises(InputFileError, match="Input/output error"):
        with atomic_path(tmp_path / "x.h5ad") as tmp:
            raise OSError(errno.EIO, f"Driver write request failed (filename = '{tmp}')")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyError):  # not an OSError: passed on unchanged
        with atomic_path(tmp_path / "y.h5ad"):
            raise KeyError("bug")
