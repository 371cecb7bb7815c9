"""Find out what a single-cell input file is from its content, not its name.

The extension of a downloaded file is often wrong (``.csv`` that is gzipped,
``.h5`` that is an ``.h5ad``, ``matrix.mtx.gz`` that was already decompressed).
:func:`sniff_format` looks at the magic bytes first (HDF5, gzip, zip, bzip2),
then at the HDF5 layout or the first line of text, and returns one of
:data:`FORMATS`. Every problem is an :class:`~cafclassify._errors.InputFileError`
that names the file and says what to do.
"""

from __future__ import annotations

import codecs
import gzip
import io
import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .._errors import InputFileError

__all__ = [
    "FORMATS",
    "MtxFiles",
    "find_mtx_files",
    "is_gzip",
    "compression_error",
    "compression_problem",
    "encoding_error",
    "open_text",
    "sniff_format",
]

logger = logging.getLogger(__name__)

#: formats :func:`cafclassify.read` understands
FORMATS = ("h5ad", "10x_h5", "10x_mtx", "csv", "tsv", "loom", "rds", "rdata")

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
BZ2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
# R's serialisation: saveRDS() writes one object ("X\n" XDR, "A\n" ASCII, "B\n" native),
# save() writes named objects behind "RDX2"/"RDX3" (XDR), "RDA*" (ASCII), "RDB*" (native)
_RDS_HEADS = (b"X\n", b"A\n", b"A\r\n", b"B\n")
_RDATA_HEADS = (b"RDX2\n", b"RDX3\n", b"RDA2\n", b"RDA3\n", b"RDB2\n", b"RDB3\n")
_HEAD_BYTES = 1 << 16  # bytes of (decompressed) text looked at when sniffing
# HDF5 allows a user block before the signature at 0, 512, 1024, 2048, ...
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096)

_MTX_RE = re.compile(r"^(?P<prefix>.*?)matrix\.mtx(\.gz)?$", re.IGNORECASE)


def _head(path: Path, n: int = _HEAD_BYTES) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except PermissionError:
        raise InputFileError(
            "the file cannot be read (permission denied).",
            path=path,
            fix="check the file permissions or copy the file somewhere you can read it.",
        ) from None
    except OSError as exc:
        raise InputFileError(
            f"the file cannot be read ({exc.strerror or exc}).",
            path=path,
            fix="check that the path is a readable file.",
        ) from None


def is_gzip(path: Path) -> bool:
    """Return True if the file starts with the gzip magic bytes."""
    return _head(path, 2) == GZIP_MAGIC


def is_hdf5(path: Path) -> bool:
    """Return True if the HDF5 signature is at one of the allowed offsets."""
    try:
        with open(path, "rb") as fh:
            for off in _HDF5_OFFSETS:
                fh.seek(off)
                if fh.read(8) == HDF5_MAGIC:
                    return True
    except OSError:
        return False
    return False


_DECOMPRESSION_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def compression_error(path: Path, exc: BaseException) -> InputFileError:
    """The error for a gzip stream that cannot be decompressed (corrupt or truncated)."""
    return InputFileError(
        f"the gzip compression is corrupt or truncated ({' '.join(str(exc).split()) or type(exc).__name__}); "
        "the content cannot be trusted.",
        path=path,
        fix="the download or copy is probably incomplete or damaged: fetch the file again and "
        "compare its checksum (`gzip -t FILE` tests it).",
    )


def compression_problem(path: Path) -> BaseException | None:
    """Decompress the whole gzip file and return the error that stops it, if any.

    A damaged deflate stream often decodes to garbage before the CRC at the end is
    checked, so a parser meets the garbage first; ask this before blaming the content.
    """
    if not is_gzip(path):
        return None
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except _DECOMPRESSION_ERRORS as exc:
        return exc
    except OSError as exc:  # e.g. "Not a gzipped file" after the first member
        return exc
    return None


def _encoding_found(raw: bytes) -> str:
    """Name the encoding of bytes that are not UTF-8 (a best guess for the message)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16"
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "UTF-32"
    try:
        raw.decode("cp1252")
    except UnicodeDecodeError:
        return "an 8-bit encoding that is not UTF-8"
    return "Latin-1 / Windows-1252 (cp1252)"


def encoding_error(path: Path, exc: UnicodeDecodeError) -> InputFileError:
    """The error for a text file that is not UTF-8: where, what was found and how to convert."""
    bad = exc.object[exc.start: exc.end] if isinstance(exc.object, bytes) else b""
    found = _encoding_found(exc.object if isinstance(exc.object, bytes) else b"")
    src = "latin1" if found.startswith("Latin-1") else ("utf-16" if found == "UTF-16" else "<encoding>")
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    stem, dot, ext = name.rpartition(".")
    converted = f"{stem}.utf8.{ext}" if dot else f"{name}.utf8"
    cmd = (f"gunzip -c {path.name} | iconv -f {src} -t utf-8 > {converted}" if is_gzip(path)
           else f"iconv -f {src} -t utf-8 {path.name} > {converted}")
    return InputFileError(
        f"the text is not UTF-8: byte {bad.hex(' ') or '?'} cannot be decoded; the file looks "
        f"like {found}. Reading it anyway would turn such characters (e.g. accented gene or "
        "cell names) into replacement characters.",
        path=path,
        fix=f"convert it to UTF-8 and read the converted file, e.g. `{cmd}`.",
    )


class _StrictText(io.TextIOWrapper):
    """UTF-8 text (a BOM is skipped) whose decoding and decompression errors name the file."""

    def __init__(self, raw: IO[bytes], path: Path) -> None:
        super().__init__(raw, encoding="utf-8-sig", errors="strict")
        self._path = path

    def _wrap(self, func, *args):
        try:
            return func(*args)
        except UnicodeDecodeError as exc:
            raise encoding_error(self._path, exc) from None
        except _DECOMPRESSION_ERRORS as exc:
            raise compression_error(self._path, exc) from None

    def read(self, size: int | None = -1) -> str:
        return self._wrap(super().read, -1 if size is None else size)

    def readline(self, size: int = -1) -> str:
        return self._wrap(super().readline, size)

    def __next__(self) -> str:
        return self._wrap(super().__next__)


def open_text(path: Path) -> IO[str]:
    """Open a UTF-8 text file read-only, decompressing gzip if the *content* is gzip.

    Other encodings are refused with a message naming the encoding found (never
    decoded with replacement characters); a damaged gzip stream is reported as such.
    """
    raw = gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")
    return _StrictText(raw, Path(path))


def open_binary(path: Path) -> IO[bytes]:
    """Open a file read-only as bytes, decompressing gzip if the content is gzip."""
    if is_gzip(path):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _text_head(path: Path) -> bytes:
    """Return the first bytes of the (decompressed) content."""
    raw = _head(path)
    if raw[:2] == GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read(_HEAD_BYTES)
        except (OSError, EOFError) as exc:
            raise InputFileError(
                f"the file is gzip-compressed but cannot be decompressed ({exc}).",
                path=path,
                fix="the download is probably incomplete or corrupted: download it again "
                "and check its checksum (for example with `gzip -t`).",
            ) from None
    return raw


@dataclass
class MtxFiles:
    """The three files of a 10x Matrix Market folder."""

    matrix: Path
    features: Path
    barcodes: Path
    legacy: bool  # genes.tsv (Cell Ranger < 3) rather than features.tsv
    prefix: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        return sorted([self.matrix, self.features, self.barcodes], key=lambda p: p.name)


def _first_existing(folder: Path, prefix: str, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in ("", ".gz"):
            cand = folder / f"{prefix}{stem}{suffix}"
            if cand.is_file():
                return cand
    return None


def find_mtx_files(path: Path) -> MtxFiles:
    """Locate matrix, features/genes and barcodes files for a 10x Matrix Market input.

    ``path`` is either the folder or the ``*matrix.mtx[.gz]`` file inside it; a
    GEO-style prefix (``GSM123_matrix.mtx.gz`` next to ``GSM123_features.tsv.gz``)
    is followed.
    """
    if path.is_dir():
        folder = path
        mtx = sorted(p for p in folder.iterdir() if p.is_file() and _MTX_RE.match(p.name))
        if not mtx:
            listing = ", ".join(sorted(p.name for p in folder.iterdir())[:20]) or "(empty)"
            raise InputFileError(
                f"the folder contains no matrix.mtx or matrix.mtx.gz file (it contains: {listing}).",
                path=path,
                fix="point to a 10x Matrix Market folder (matrix.mtx[.gz], features.tsv[.gz] or "
                "genes.tsv, barcodes.tsv[.gz]) or to a single data file.",
            )
        if len(mtx) > 1:
            raise InputFileError(
                f"the folder contains {len(mtx)} matrix files ({', '.join(p.name for p in mtx)}), "
                "so it is not clear which one to read.",
                path=path,
                fix="pass the path of one of the .mtx files instead of the folder.",
            )
        matrix = mtx[0]
    else:
        matrix = path
        folder = path.parent
    m = _MTX_RE.match(matrix.name)
    prefix = m.group("prefix") if m else ""
    features = _first_existing(folder, prefix, ("features.tsv",))
    legacy = False
    if features is None:
        features = _first_existing(folder, prefix, ("genes.tsv",))
        legacy = features is not None
    barcodes = _first_existing(folder, prefix, ("barcodes.tsv",))
    missing = []
    if features is None:
        missing.append(f"{prefix}features.tsv[.gz] (or {prefix}genes.tsv[.gz])")
    if barcodes is None:
        missing.append(f"{prefix}barcodes.tsv[.gz]")
    if missing:
        raise InputFileError(
            f"the 10x Matrix Market input is incomplete: {' and '.join(missing)} not found "
            f"next to {matrix.name}.",
            path=folder,
            fix="put the matrix, features (genes) and barcodes files of one sample in the same "
            "folder, with the same file-name prefix.",
        )
    return MtxFiles(matrix=matrix, features=features, barcodes=barcodes, legacy=legacy, prefix=prefix)


def _hdf5_kind(path: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            attrs = dict(f.attrs)
            if "matrix" in f and isinstance(f["matrix"], h5py.Group):
                g = f["matrix"]
                if {"barcodes", "data", "indices", "indptr", "shape"} <= set(g.keys()):
                    return "10x_h5"
            if "matrix" in f and isinstance(f["matrix"], h5py.Dataset) and (
                "row_attrs" in f or "col_attrs" in f
            ):
                return "loom"
            enc = attrs.get("encoding-type")
            if isinstance(enc, bytes):
                enc = enc.decode()
            if enc == "anndata" or {"obs", "var"} <= keys or "X" in keys:
                return "h5ad"
            for k in keys:  # Cell Ranger 2 layout: one group per genome
                obj = f[k]
                if isinstance(obj, h5py.Group) and {
                    "barcodes",
                    "data",
                    "indices",
                    "indptr",
                    "shape",
                } <= set(obj.keys()):
                    return "10x_h5"
    except OSError as exc:
        raise InputFileError(
            f"the HDF5 file cannot be opened ({_short_hdf5_message(exc)}).",
            path=path,
            fix="the file is probably truncated or corrupted (an incomplete download or copy): "
            "download or copy it again and compare its checksum.",
        ) from None
    raise InputFileError(
        f"the file is HDF5 but not a layout cafclassify knows (top-level keys: "
        f"{', '.join(sorted(keys)[:15]) or 'none'}).",
        path=path,
        fix="provide an .h5ad (AnnData), a 10x Cell Ranger .h5, or a .loom file; for other HDF5 "
        "layouts load the matrix yourself and write it with AnnData.write_h5ad().",
    )


def _short_hdf5_message(exc: BaseException) -> str:
    msg = str(exc)
    m = re.search(r"\(([^()]*(?:truncated|signature|eof|corrupt)[^()]*)\)", msg, re.IGNORECASE)
    if m:
        return m.group(1)
    return msg.splitlines()[0][:200] if msg else type(exc).__name__


def _r_kind(head: bytes) -> str | None:
    """'rdata' (save()), 'rds' (saveRDS()) or None, from the decompressed first bytes."""
    if head.startswith(_RDATA_HEADS):
        return "rdata"
    if head.startswith(_RDS_HEADS):
        return "rds"
    return None


def _compressed_head(path: Path, magic: bytes) -> bytes:
    """First decompressed bytes of a bzip2 / xz file (b"" if they cannot be decoded)."""
    import bz2
    import lzma

    opener = bz2.open if magic == BZ2_MAGIC else lzma.open
    try:
        with opener(path, "rb") as fh:
            return fh.read(16)
    except (OSError, EOFError, lzma.LZMAError):
        return b""


def _text_kind(path: Path, head: bytes) -> str:
    r_kind = _r_kind(head)
    if r_kind is not None:
        return r_kind
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # text, but not UTF-8
        raise encoding_error(path, UnicodeDecodeError("utf-8", head, 0, 2, "UTF-16 byte-order mark"))
    if b"\x00" in head:
        raise InputFileError(
            "the file is binary but not HDF5, gzip or a format cafclassify knows.",
            path=path,
            fix="provide .h5ad, 10x .h5, .loom, .rds/.RData, a 10x Matrix Market folder, or a "
            "CSV/TSV table.",
        )
    text = head.decode("utf-8", errors="replace")
    if text.startswith("%%MatrixMarket"):
        return "10x_mtx"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputFileError(
            "the file is empty.",
            path=path,
            fix="the download or export probably failed: produce the file again.",
        )
    first = lines[0]
    n_tab, n_comma = first.count("\t"), first.count(",")
    if n_tab == 0 and n_comma == 0:
        if len(lines) > 1:
            second = lines[1]
            n_tab, n_comma = second.count("\t"), second.count(",")
        if n_tab == 0 and n_comma == 0:
            raise InputFileError(
                "the file is text but neither comma- nor tab-separated, so it is not a "
                "readable expression table.",
                path=path,
                fix="provide a CSV or TSV table with gene names on one axis and cell barcodes on "
                "the other (first row = column names, first column = row names).",
            )
    return "tsv" if n_tab >= n_comma else "csv"


def _extension_hint(path: Path) -> str | None:
    name = path.name.lower()
    for ext in (".gz", ".bz2"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    if path.is_dir():
        return "10x_mtx"
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith((".h5", ".hdf5")):
        return "10x_h5"
    if name.endswith(".loom"):
        return "loom"
    if name.endswith(".rds"):
        return "rds"
    if name.endswith((".rda", ".rdata")):
        return "rdata"
    if name.endswith(".mtx"):
        return "10x_mtx"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".txt", ".tab")):
        return "tsv"
    return None


def sniff_format(path: str | os.PathLike) -> str:
    """Return the input format of ``path`` judged from its content.

    Parameters
    ----------
    path
        A file, or a folder holding a 10x Matrix Market matrix.

    Returns
    -------
    One of :data:`FORMATS`.

    Raises
    ------
    InputFileError
        If the path does not exist, is empty, compressed in a way that is not
        supported, truncated, or of no known kind.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(
            "the path does not exist.",
            path=p,
            fix="check the spelling and the working directory (relative paths are resolved from "
            f"{Path.cwd()}).",
        )
    if p.is_dir():
        find_mtx_files(p)  # raises a clear error if incomplete
        return "10x_mtx"
    if p.stat().st_size == 0:
        raise InputFileError(
            "the file is empty (0 bytes).",
            path=p,
            fix="the download or export probably failed: produce the file again.",
        )
    if is_hdf5(p):
        kind = _hdf5_kind(p)
    else:
        raw = _head(p)
        if raw.startswith(ZIP_MAGIC):
            raise InputFileError(
                "the file is a zip archive.",
                path=p,
                fix="unzip it and point to the file (or 10x folder) inside.",
            )
        r_kind = None
        for magic in (BZ2_MAGIC, XZ_MAGIC):
            if raw.startswith(magic):
                r_kind = _r_kind(_compressed_head(p, magic))
        if r_kind is not None:
            kind = r_kind
        elif raw.startswith(BZ2_MAGIC):
            raise InputFileError(
                "the file is bzip2-compressed, which cafclassify does not read directly.",
                path=p,
                fix="decompress it (`bunzip2`) or recompress it with gzip.",
            )
        else:
            head = _text_head(p)
            if head.startswith(HDF5_MAGIC):
                raise InputFileError(
                    "the file is a gzip-compressed HDF5 file.",
                    path=p,
                    fix="decompress it (`gunzip`) first; HDF5 files are read uncompressed.",
                )
            kind = _text_kind(p, head)
    hint = _extension_hint(p)
    if hint is not None and hint != kind and {hint, kind} != {"csv", "tsv"}:
        logger.warning(
            "%s: the file name suggests %s but the content is %s; reading it as %s.",
            p,
            hint,
            kind,
            kind,
        )
    return kind
