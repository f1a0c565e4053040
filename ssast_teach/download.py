"""Download one file safely: resumable, length- and checksum-checked, never half-written.

A small utility used by chapter 01 (datasets) and chapter 08 (checkpoints). The bytes go to
``<dest>.part`` in the same directory; only a complete, verified file is renamed onto ``dest``
(``os.replace`` is atomic on one file system), so ``dest`` is either absent or right.

What happens to the ``.part`` file:

* an interrupted transfer (network error, server closed early) keeps it, and the next call
  resumes with an HTTP ``Range`` request;
* a server that ignores ``Range`` (``200`` instead of ``206``) or cannot satisfy it (``416``)
  makes the download start again from byte 0;
* a checksum mismatch, or more bytes than announced, removes it: those bytes are wrong.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["DownloadError", "download_file", "sha256_of"]

_USER_AGENT = "ssast-teach (python urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download failed; the message says which URL to fetch by hand and where to put it."""


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _by_hand(url: str, dest: Path, sha256: str | None) -> str:
    pin = f" Its sha256 must be {sha256}." if sha256 else ""
    return (
        f"To get it by hand, download\n  {url}\nwith a browser, wget or curl and save it as\n"
        f"  {dest}\n{pin}".rstrip()
    )


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    An existing ``dest`` (matching ``sha256`` when given) is returned without touching the
    network. Raises :class:`DownloadError` on any network error, a length mismatch or a
    checksum mismatch; ``dest`` is never left holding a partial or wrong file.
    """
    dest = Path(dest).expanduser()
    if sha256 is not None:
        sha256 = sha256.lower()
    if dest.exists():
        if sha256 is None or sha256_of(dest, chunk_size) == sha256:
            return dest
        # The file is the user's: report, never delete.
        raise DownloadError(
            f"{dest} exists but its sha256 is not {sha256}. Move it away and run again, "
            f"or replace it yourself. {_by_hand(url, dest, sha256)}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")

    try:
        _fetch_into(url, part, progress=progress, timeout=timeout, chunk_size=chunk_size)
    except DownloadError as err:
        raise DownloadError(f"{err}\n{_by_hand(url, dest, sha256)}") from err.__cause__
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        kept = (
            f" The {part.stat().st_size} bytes received are kept in {part}; run again to resume."
            if part.exists()
            else ""
        )
        raise DownloadError(
            f"Could not download {url}: {err}.{kept}\n{_by_hand(url, dest, sha256)}"
        ) from err

    if sha256 is not None:
        got = sha256_of(part, chunk_size)
        if got != sha256:
            part.unlink()
            raise DownloadError(
                f"Checksum mismatch for {url}: sha256 {got}, expected {sha256}. The download was "
                f"removed.\n{_by_hand(url, dest, sha256)}"
            )
    os.replace(part, dest)
    return dest


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_into(url: str, part: Path, *, progress: bool, timeout: float, chunk_size: int) -> None:
    """Append the rest of ``url`` to ``part`` (resuming), then check the length."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        # 416: the .part is not a prefix the server can continue; start over.
        err.close()
        part.unlink()
        offset = 0
        response = _open(url, offset, timeout)

    with response:
        total = None
        if offset and response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                raise DownloadError(
                    f"Server answered the resume request for {url} with an unexpected "
                    f"Content-Range {response.headers.get('Content-Range')!r}"
                )
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # 200: the server ignored Range and sends everything
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None

        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            while block := response.read(chunk_size):
                f.write(block)
                bar.update(len(block))

    size = part.stat().st_size
    if total is not None and size < total:
        raise DownloadError(
            f"Transfer of {url} stopped at {size} of {total} bytes. The bytes received are kept "
            f"in {part}; run again to resume."
        )
    if total is not None and size > total:
        part.unlink()
        raise DownloadError(
            f"{url} gave {size} bytes but announced {total}; the download was removed."
        )
