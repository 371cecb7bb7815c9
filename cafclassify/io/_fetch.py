"""Download (or copy) an input file with checksum verification.

``fetch`` is the only place in cafclassify that touches the network, and it is only
called by the ``cafclassify fetch`` command / the workflow's ``fetch`` rule, never by
the analysis functions. Transfers go to ``<dest>.part``, resume with an HTTP ``Range``
request after a dropped connection, are retried with exponential back-off, are checked
against the expected SHA-256 and only then renamed onto ``dest``. A failed or
unverified download never leaves a file under the final name.

``fetch`` never removes a file it did not create: a local source is copied (never
moved or unlinked), through a private temporary file; an existing ``dest`` with the
wrong checksum is left as it is (only a verified file replaces it); and when ``dest``
is the source itself (the same path, a link to it or a hard link), nothing is copied:
the file is verified in place and, if its checksum differs, left unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .._errors import DownloadError

__all__ = ["fetch", "file_sha256"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # 1 MiB
_BACKOFF_SECONDS = 1.0  # first retry delay; doubled each attempt (tests set it to 0)
_HTML_MARKERS = (b"<!doctype html", b"<html")
_URL_SCHEMES = ("https", "http", "ftp", "file")


class _TransientError(Exception):
    """A failure worth retrying (dropped connection, timeout, 5xx)."""


def file_sha256(path: str | os.PathLike, *, chunk_size: int = _CHUNK) -> str:
    """Return the hex SHA-256 of a file, read in chunks.

    Parameters
    ----------
    path
        The file to hash.
    chunk_size
        Bytes read at a time.

    Returns
    -------
    The lower-case hexadecimal digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise_sha256(sha256: str | None, source: str) -> str | None:
    if sha256 is None:
        return None
    value = str(sha256).strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:") :]
    if value == "":
        return None
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise DownloadError(
            f"the expected checksum {sha256!r} is not a SHA-256 hex digest (64 characters 0-9a-f).",
            path=source,
            fix="copy the checksum exactly (e.g. from `sha256sum FILE`), or leave it empty to skip verification.",
        )
    return value


def _same_file(a: Path, b: Path) -> bool:
    from .._atomic import same_file

    return a.exists() and same_file(a, b)


def _is_url(source: str) -> bool:
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    # a single letter is a Windows drive ("C:\\data"), not a scheme
    return len(scheme) > 1 and "://" in source


def _looks_like_html(head: bytes) -> bool:
    start = head[:512].lstrip().lower()
    return start.startswith(_HTML_MARKERS)


def _mismatch(source: str, dest: Path, expected: str, observed: str, *, same: bool = False) -> DownloadError:
    if same:
        return DownloadError(
            f"checksum mismatch: expected sha256 {expected}, observed {observed}.",
            path=source,
            fix=f"the file is not the one the checksum describes (changed or corrupted); it is "
            f"the destination {dest} itself and was left unchanged: restore the original file or "
            "correct the expected checksum.",
        )
    if dest.exists() or dest.is_symlink():
        what = f"the existing {dest} was left unchanged"
    else:
        what = f"nothing was written to {dest}"
    return DownloadError(
        f"checksum mismatch for {source}: expected sha256 {expected}, observed {observed}.",
        path=source,
        fix=(
            "the remote file changed or the transfer was corrupted. Check the URL and the "
            f"expected checksum in your dataset sheet; {what}."
        ),
    )


def _verify_and_move(part: Path, dest: Path, expected: str | None, source: str) -> Path:
    observed = file_sha256(part)
    if expected is not None and observed != expected:
        part.unlink(missing_ok=True)  # our own temporary file; dest is never removed
        raise _mismatch(source, dest, expected, observed)
    os.replace(part, dest)
    if expected is None:
        logger.warning(
            "%s: no expected checksum given; fetched file has sha256 %s. Add it to your dataset "
            "sheet so future downloads are verified.",
            source,
            observed,
        )
    else:
        logger.info("%s: sha256 verified (%s)", dest, observed)
    return dest


def _copy_local(src: Path, part: Path) -> None:
    if not src.exists():
        raise DownloadError(
            "the input file does not exist.",
            path=src,
            fix="check the path (relative paths are resolved from the current working directory).",
        )
    if src.is_dir():
        raise DownloadError(
            "the input is a folder; fetch copies single files.",
            path=src,
            fix="point to the file itself, or use the folder directly as input to `cafclassify read`.",
        )
    with open(src, "rb") as fin, open(part, "wb") as fout:
        shutil.copyfileobj(fin, fout, _CHUNK)


def _http_error(exc: urllib.error.HTTPError, url: str) -> Exception:
    if exc.code >= 500 or exc.code in (408, 429):
        return _TransientError(f"HTTP {exc.code} {exc.reason}")
    if exc.code == 404:
        return DownloadError(
            "the server says the file does not exist (HTTP 404 Not Found).",
            path=url,
            fix="check the URL (copy it from the repository's download link) and that the file is public.",
        )
    return DownloadError(
        f"the server refused the request (HTTP {exc.code} {exc.reason}).",
        path=url,
        fix="check the URL and that the file is publicly accessible without logging in.",
    )


def _download_once(url: str, part: Path, *, timeout: float, allow_http: bool) -> None:
    """One attempt: (re)start or resume ``part``. Raises _TransientError to ask for a retry."""
    from .. import __version__

    offset = part.stat().st_size if part.exists() else 0
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    headers = {"User-Agent": f"cafclassify/{__version__} (python-urllib)"}
    if offset and scheme in ("http", "https"):
        headers["Range"] = f"bytes={offset}-"
    elif offset:
        offset = 0  # no resume for ftp: restart
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # the range starts at/after the end: our .part is stale or complete; start over
            part.unlink(missing_ok=True)
            raise _TransientError("HTTP 416 on resume; restarting the transfer") from None
        raise _http_error(exc, url) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _TransientError(f"cannot connect: {reason}") from None

    with response:
        final_url = response.geturl() or url
        final_scheme = urllib.parse.urlsplit(final_url).scheme.lower()
        if final_scheme == "http" and not allow_http:
            raise DownloadError(
                f"the server redirected to an unencrypted http:// address ({final_url}).",
                path=url,
                fix="use an https:// mirror, or pass --allow-http if you trust the network.",
            )
        status = getattr(response, "status", None) or 200
        content_type = (response.headers.get("Content-Type") or "").lower()
        if content_type.startswith(("text/html", "application/xhtml")):
            raise DownloadError(
                f"the server returned a web page (Content-Type: {content_type}) instead of a data file.",
                path=url,
                fix=(
                    "use the direct download link of the file (not the landing page); for GEO use the "
                    "https://ftp.ncbi.nlm.nih.gov/geo/... link of the supplementary file."
                ),
            )
        if offset and status == 206:
            mode = "ab"
            logger.info("%s: resuming at byte %d", url, offset)
        else:
            mode, offset = "wb", 0
        length = response.headers.get("Content-Length")
        expected_total = offset + int(length) if length and length.isdigit() else None

        written = offset
        first = True
        with open(part, mode) as fh:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (TimeoutError, ConnectionError, OSError, urllib.error.URLError) as exc:
                    raise _TransientError(f"connection lost after {written} bytes: {exc}") from None
                except Exception as exc:  # http.client.IncompleteRead and friends
                    raise _TransientError(
                        f"transfer interrupted after {written} bytes: {exc}"
                    ) from None
                if not block:
                    break
                if first and offset == 0 and _looks_like_html(block):
                    fh.close()
                    part.unlink(missing_ok=True)
                    raise DownloadError(
                        "the server returned an HTML page instead of a data file.",
                        path=url,
                        fix=(
                            "use the direct download link of the file (not the landing page or a "
                            "login/consent page)."
                        ),
                    )
                first = False
                fh.write(block)
                written += len(block)
        if expected_total is not None and written < expected_total:
            raise _TransientError(f"connection closed after {written} of {expected_total} bytes")


def fetch(
    url_or_path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    allow_http: bool = False,
    retries: int = 3,
    timeout: float = 60,
) -> Path:
    """Download or copy a file to ``dest``, verifying its SHA-256.

    Parameters
    ----------
    url_or_path
        An ``https://``, ``ftp://`` or ``file://`` URL, or a local path.
        ``http://`` is refused unless ``allow_http`` is true.
    dest
        Where the file goes. Parent folders are created. The transfer is written to
        ``<dest>.part`` and renamed onto ``dest`` only after verification.
    sha256
        Expected hex digest (an optional ``sha256:`` prefix is accepted). If ``dest``
        already exists with this checksum nothing is downloaded. If ``None`` the file
        is not verified and its checksum is logged so you can pin it.
    allow_http
        Allow unencrypted ``http://`` URLs (and redirects to them).
    retries
        Extra attempts after a transient failure (dropped connection, time-out,
        HTTP 5xx); interrupted HTTP transfers resume where they stopped.
    timeout
        Seconds to wait for the server on each network operation.

    Returns
    -------
    The path of the verified file (``dest``).

    Raises
    ------
    DownloadError
        The URL is refused (``http://`` without ``allow_http``, unknown scheme), the
        server answers 404 or another client error, returns an HTML page instead of
        data, the transfer keeps failing after ``retries`` attempts, or the checksum
        does not match (then no file is left at ``dest``).
    """
    source = os.fspath(url_or_path)
    dest = Path(dest).expanduser()
    expected = _normalise_sha256(sha256, source)
    if retries < 0:
        raise DownloadError(
            f"retries must be 0 or more, got {retries}.", path=source, fix="pass --retries 3."
        )

    if dest.is_dir():
        raise DownloadError(
            "the destination is an existing folder.",
            path=dest,
            fix="give the full destination file name, e.g. resources/downloads/<id>/<file>.",
        )
    if dest.exists() and expected is not None:
        if file_sha256(dest) == expected:
            logger.info("%s already present with the expected sha256; not downloading again", dest)
            return dest
        if not _is_url(source) and _same_file(Path(source).expanduser(), dest):
            raise _mismatch(source, dest, expected, file_sha256(dest), same=True)
        logger.warning("%s exists but its checksum differs; fetching it again", dest)

    from .._atomic import ensure_writable_dir

    ensure_writable_dir(dest)
    part = dest.with_name(dest.name + ".part")

    def copy_local(local: Path) -> Path:
        from .._atomic import same_file

        if local.exists() and same_file(local, dest):
            # dest is the source (or a link to it): verify in place, never copy onto itself
            if expected is not None:
                observed = file_sha256(local)
                if observed != expected:
                    raise _mismatch(source, dest, expected, observed, same=True)
            logger.info("%s is the source itself; nothing to copy", dest)
            return dest
        import tempfile

        # a private temporary file (never a name a user file could have), renamed when verified
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        own = Path(tmp)
        try:
            _copy_local(local, own)
            return _verify_and_move(own, dest, expected, source)
        finally:
            own.unlink(missing_ok=True)

    if not _is_url(source):
        return copy_local(Path(source).expanduser())

    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme not in _URL_SCHEMES:
        raise DownloadError(
            f"unsupported URL scheme {scheme!r}.",
            path=source,
            fix="use an https://, ftp:// or file:// URL, or a local path.",
        )
    if scheme == "http" and not allow_http:
        raise DownloadError(
            "refusing an unencrypted http:// URL.",
            path=source,
            fix="use the https:// address of the same file (most repositories offer one), or pass --allow-http.",
        )
    if scheme == "file":
        return copy_local(Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path)))

    last_problem = ""
    for attempt in range(retries + 1):
        try:
            _download_once(source, part, timeout=timeout, allow_http=allow_http)
        except _TransientError as exc:
            last_problem = str(exc)
            if attempt < retries:
                delay = _BACKOFF_SECONDS * (2**attempt)
                logger.warning(
                    "%s: %s; retrying in %.1f s (attempt %d of %d)",
                    source,
                    exc,
                    delay,
                    attempt + 2,
                    retries + 1,
                )
                time.sleep(delay)
            continue
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        return _verify_and_move(part, dest, expected, source)

    raise DownloadError(
        f"the download failed after {retries + 1} attempts ({last_problem}).",
        path=source,
        fix=(
            f"check your network connection and rerun: the partial file {part} is kept and the "
            "transfer resumes where it stopped."
        ),
    )
