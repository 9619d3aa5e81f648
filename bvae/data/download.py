"""Download DeepMind's official dSprites file, verified before it lands.

A ``<out>.part`` file beside the output collects the bytes; a retry resumes it with an HTTP
Range request (or restarts cleanly when the server ignores the range). Only a file whose MD5
matches is renamed onto the output path, so nothing partial or unverified is ever there.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bvae.errors import BadInput, Transient
from bvae.progress import progress

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 16


class DownloadError(RuntimeError):
    """A download that did not produce a verified file; the message says what to do.

    Each subclass is also :class:`Transient` (retry later: exit 75) or :class:`BadInput` (final:
    the URL or the checksum in params.yaml must change; exit 2)."""


class UnreachableError(DownloadError, Transient):
    """No connection could be made (DNS failure, refused connection, time-out)."""


class HTTPStatusError(DownloadError):
    """The server answered with an error status."""


class ServerFailedError(HTTPStatusError, Transient):
    """HTTP 5xx: the server failed this time."""


class NotServedError(HTTPStatusError, BadInput):
    """HTTP 4xx (404, 403...): the server will not give this URL; asking again will not help."""


class TruncatedError(DownloadError, Transient):
    """The server closed the connection before sending every byte it announced."""


class ChecksumMismatchError(DownloadError, BadInput):
    """The bytes arrived but their MD5 is not the expected one (final: other bytes, not bad luck)."""


class NoMirrorError(DownloadError, BadInput):
    """No URL was given."""


@dataclass(frozen=True)
class DownloadResult:
    url: str
    md5: str
    sha256: str
    num_bytes: int


def _md5_and_sha256(path: Path) -> tuple[str, str]:
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def _fetch_once(url: str, part: Path, timeout_s: float, show_progress: bool) -> None:
    """One attempt: append to ``part`` from where it stops, or restart it if the server must."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "bvae-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the range starts at the end: the part is complete
            return
        failed = ServerFailedError if error.code >= 500 else NotServedError
        raise failed(f"{url} answered HTTP {error.code} {error.reason}") from error
    except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise UnreachableError(f"cannot connect to {url}: {reason}") from error
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file: start the part over
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        received = have
        with (
            open(part, "ab" if resumed else "wb") as stream,
            progress(
                total=expected,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=Path(url).name[:40],
                disable=not show_progress,
            ) as bar,
        ):
            try:
                while chunk := response.read(_CHUNK_BYTES):
                    stream.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (TimeoutError, http.client.IncompleteRead, ConnectionError) as error:
                raise TruncatedError(
                    f"{url}: connection lost after {received} of {expected} bytes ({error})"
                ) from error
    if expected is not None and received < expected:
        raise TruncatedError(f"{url}: connection closed after {received} of {expected} bytes")


def download_verified(
    urls: tuple[str, ...] | list[str],
    out_path: str | os.PathLike,
    expected_md5: str,
    *,
    timeout_s: float = 30.0,
    retries: int = 3,
    backoff_s: float = 1.0,
    connect_retries: int | None = None,
    show_progress: bool = True,
) -> DownloadResult:
    """Fetch the first URL whose bytes have ``expected_md5``; rename them onto ``out_path``.

    Transient failures (connection, truncation, HTTP 5xx) are retried ``retries`` times with
    exponential back-off, resuming the partial file; ``connect_retries`` (default ``retries``)
    caps retries of failed connections, so an offline caller can give up at once. A 4xx is final
    for that URL. If every URL fails, the error of the last one is raised, naming all of them.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    part = out_path.with_name(out_path.name + ".part")
    connect_retries = retries if connect_retries is None else connect_retries
    failures: list[DownloadError] = []
    for url in urls:
        attempt = 0
        while True:
            try:
                _fetch_once(url, part, timeout_s, show_progress)
                md5, sha256 = _md5_and_sha256(part)
                if md5 != expected_md5:
                    part.unlink(missing_ok=True)  # a corrupt file must not be resumed
                    raise ChecksumMismatchError(
                        f"{url}: MD5 {md5} != expected {expected_md5}; the file was discarded"
                    )
                num_bytes = part.stat().st_size
                os.replace(part, out_path)
                return DownloadResult(url=url, md5=md5, sha256=sha256, num_bytes=num_bytes)
            except (ChecksumMismatchError, HTTPStatusError) as error:
                if not isinstance(error, Transient) or attempt >= retries:
                    failures.append(error)
                    break
            except UnreachableError as error:
                if attempt >= connect_retries:
                    failures.append(error)
                    break
            except TruncatedError as error:
                if attempt >= retries:
                    failures.append(error)
                    break
                log.warning("%s; resuming", error)
            attempt += 1
            time.sleep(backoff_s * 2 ** (attempt - 1))
    # Worth a later retry if any mirror failed for a passing reason; final if every one refused.
    transient = [failure for failure in failures if isinstance(failure, Transient)]
    error_type = type((transient or failures)[-1]) if failures else NoMirrorError
    details = "\n  ".join(str(failure) for failure in failures) or "no URL was given"
    hint = (
        "Check the network (or a proxy), or set `data.source: procedural` in params.yaml to "
        "render the dataset offline."
    )
    if part.exists():
        hint += f" The partial file {part} is kept so the next run resumes it."
    raise error_type(f"could not download dSprites:\n  {details}\n{hint}")
