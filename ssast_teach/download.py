"""Download one file safely: resumable, length- and checksum-checked, never half-written.

A small utility used by chapter 01 (datasets) and chapter 08 (checkpoints). The bytes go to
``<dest>.part`` in the same directory; only a complete, verified file is renamed onto ``dest``
(``os.replace`` is atomic on one file system), so ``dest`` is either absent or right.

What happens to the ``.part`` file:

* an interrupted transfer (network error, server closed early) keeps it, and the next call
  resumes with an HTTP ``Range`` request;
* a server that ignores ``Range`` (``200`` instead of ``206``) or cannot satisfy it (``416``)
  makes the download start again from byte 0;
* a checksum or size mismatch, or more bytes than announced, moves it aside
  (:func:`move_aside`): those bytes are wrong, but nothing here deletes a file.

Also here, for the recipes that verify what they fetch: :func:`mismatch` (a file against its
expected size and sha256), :func:`git_blob_sha1` (the id under which git, and the dataset
manifests of chapter 01, name a file's content), :func:`move_aside`, and
:func:`rank_zero_first`, which lets one process of a ``torchrun`` job download while the others
wait.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from tqdm.auto import tqdm

__all__ = [
    "DownloadError",
    "IntegrityError",
    "atomic_write",
    "download_file",
    "git_blob_sha1",
    "mismatch",
    "move_aside",
    "rank_zero_first",
    "sha256_of",
]

log = logging.getLogger(__name__)

_USER_AGENT = "ssast-teach (python urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download failed; the message says which URL to fetch by hand and where to put it."""


class IntegrityError(DownloadError):
    """A file is not the expected one (size, checksum, archive contents). It was moved aside and
    not used; the message names it, what was expected, what was found and where it went."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it onto ``path``.

    The one way the library writes a file a user keeps (checkpoints, run states, results,
    datafiles, notebooks): a reader sees the old file or the new one, never half of one, and a
    failed or interrupted ``write`` leaves the old file as it was.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _hexdigest(path: Path, digest, chunk_size: int) -> str:
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    return _hexdigest(path, hashlib.sha256(), chunk_size)


def git_blob_sha1(path: Path, chunk_size: int = 1 << 20) -> str:
    """The blob id git gives the file's content, as ``git ls-tree`` lists it: the sha1 of
    ``b"blob <size>\\0"`` followed by the content."""
    header = f"blob {Path(path).stat().st_size}\0".encode()
    return _hexdigest(path, hashlib.sha1(header), chunk_size)


def mismatch(
    path: Path, *, size: int | None = None, sha256: str | None = None, chunk_size: int = 1 << 20
) -> str | None:
    """What is wrong with ``path`` (``"expected ..., found ..."``), or None when it has the
    given size and sha256 (either may be None: not checked). The size is checked first: cheap."""
    if size is not None and (found := Path(path).stat().st_size) != size:
        return f"expected {size} bytes, found {found}"
    if sha256 is not None and (found := sha256_of(path, chunk_size)) != sha256.lower():
        return f"expected sha256 {sha256.lower()}, found {found}"
    return None


def move_aside(path: Path, like: Path | None = None) -> Path:
    """Rename ``path`` (a file or a folder) to ``<like>.rejected-<date>-<time>`` next to it and
    return the new path; ``like`` defaults to ``path``. A file that failed verification is moved
    so that it is never used, and never deleted: it may be the user's."""
    path = Path(path)
    stem = f"{(like or path).name}.rejected-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, n = path.with_name(stem), 1
    while aside.exists() or aside.is_symlink():  # never rename over anything
        n += 1
        aside = path.with_name(f"{stem}-{n}")
    os.rename(path, aside)
    return aside


# Process 0 may download gigabytes while the others wait; the default process group's timeout
# (nccl: 10 minutes) would give up long before, so the wait uses a gloo group of its own.
_RANK_ZERO_WAIT = timedelta(hours=6)


@contextmanager
def rank_zero_first(what: str) -> Iterator[None]:
    """Under ``torchrun``, run the ``with`` body in process 0 first, then in the others.

    Wrap a download or a dataset preparation in it: process 0 fetches and verifies while the
    others wait; they then run the same body, which finds the finished files and only verifies
    them. If process 0 fails, the others raise :class:`DownloadError` (naming ``what``) without
    trying. Every process of the job must enter it. Without an initialised ``torch.distributed``
    process group it does nothing.
    """
    import torch.distributed as dist  # here, not at the top: downloading a file needs no torch

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield
        return
    group = dist.new_group(backend="gloo", timeout=_RANK_ZERO_WAIT)
    done = [False]
    try:
        if dist.get_rank() == 0:
            try:
                yield
                done[0] = True
            finally:
                dist.broadcast_object_list(done, src=0, group=group)
        else:
            dist.broadcast_object_list(done, src=0, group=group)
            if not done[0]:
                raise DownloadError(
                    f"process 0 could not get {what} (its error is in its output); "
                    "this process did not try"
                )
            yield
    finally:
        dist.destroy_process_group(group)


def _by_hand(url: str, dest: Path, sha256: str | None, size: int | None = None) -> str:
    pin = f" Its sha256 must be {sha256}." if sha256 else ""
    pin = f" It must have {size} bytes.{pin}" if size is not None else pin
    return (
        f"To get it by hand, download\n  {url}\nwith a browser, wget or curl and save it as\n"
        f"  {dest}\n{pin}".rstrip()
    )


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 30,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    With ``sha256`` and/or ``size`` an existing ``dest`` is checked: if it matches it is returned
    without touching the network, if not it is moved aside (:func:`move_aside`) and downloaded
    again. Without them an existing ``dest`` is returned as it is: the caller verifies it.
    Raises :class:`DownloadError` on any network error or a length mismatch, and
    :class:`IntegrityError` when the bytes received are not the expected ones (they are moved
    aside); ``dest`` is never left holding a partial or wrong file.
    """
    dest = Path(dest).expanduser()
    if sha256 is not None:
        sha256 = sha256.lower()
    if dest.exists():
        problem = mismatch(dest, size=size, sha256=sha256, chunk_size=chunk_size)
        if problem is None:
            return dest
        aside = move_aside(dest)
        log.warning("%s is not the file of %s (%s): moved it to %s", dest, url, problem, aside)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")

    try:
        _fetch_into(url, part, progress=progress, timeout=timeout, chunk_size=chunk_size)
    except DownloadError as err:
        raise type(err)(f"{err}\n{_by_hand(url, dest, sha256, size)}") from err.__cause__
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        kept = (
            f" The {part.stat().st_size} bytes received are kept in {part}; run again to resume."
            if part.exists()
            else ""
        )
        raise DownloadError(
            f"Could not download {url}: {err}.{kept}\n{_by_hand(url, dest, sha256, size)}"
        ) from err

    problem = mismatch(part, size=size, sha256=sha256, chunk_size=chunk_size)
    if problem is not None:
        aside = move_aside(part, like=dest)
        raise IntegrityError(
            f"Checksum mismatch: the download of {url} is not the expected file ({problem}). "
            f"The bytes received were moved to {aside}.\n{_by_hand(url, dest, sha256, size)}"
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
        aside = move_aside(part, like=part.with_suffix(""))
        raise IntegrityError(
            f"{url} gave {size} bytes but announced {total}; the bytes received were moved to "
            f"{aside}."
        )
