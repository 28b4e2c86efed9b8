"""Resumable, sha256-checked downloads of a task's plan and weights (HTTP ``Range``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import httpx

from device_sdk.client import refusal
from device_sdk.session import Failure

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class BlobDownloader:
    """Download a plan or weights into ``directory/<sha256>.part``, resuming after a drop.

    A retry asks for the rest with ``Range: bytes=N-`` and ``If-Range: "<sha256>"`` (the
    coordinator's ETag is the blob's sha256). A ``206`` whose ``Content-Range`` starts at N is
    appended; a ``200`` is the whole blob again (a server without range support, or a changed
    blob) and replaces the partial file. Bytes stream to disk in chunks, so a blob is held in
    memory once, at the end, when its sha256 is checked; one larger than ``max_bytes`` is
    refused as it arrives.
    """

    def __init__(
        self,
        http: httpx.Client,
        directory: str | os.PathLike[str],
        *,
        token: Callable[[], str | None],
        max_bytes: int = 256 * 2**20,
        chunk_bytes: int = 64 * 2**10,
    ) -> None:
        self.http = http
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.token = token
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes

    def fetch(self, url: str, sha256: str) -> bytes | Failure:
        """The verified bytes, or a Failure (a refusal of our own making is a 400).

        Raises :class:`ProtocolError` for a 4xx/5xx answer and ``httpx.TransportError`` for a
        lost connection, as the client does; what arrived before the loss stays on disk.
        """
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):  # it names a file: never a path
            return Failure(400, "bad_task", f"{sha256[:80]!r} is not a sha256")
        part = self.directory / f"{sha256}.part"
        offset = part.stat().st_size if part.exists() else 0
        if offset and hashlib.sha256(part.read_bytes()).hexdigest() == sha256:
            return self._take(part, sha256, url)  # the last attempt died after its final byte
        headers = {} if self.token() is None else {"Authorization": f"Bearer {self.token()}"}
        if offset:
            headers |= {"Range": f"bytes={offset}-", "If-Range": f'"{sha256}"'}
        with self.http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:  # the partial file is no prefix of this blob
                part.unlink(missing_ok=True)
                return Failure(0, "corrupt_download", "the server refused the range asked for")
            if response.status_code >= 400:
                response.read()
                raise refusal(response)
            if response.status_code == 206:
                start = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
                if start is None or int(start.group(1)) != offset:
                    part.unlink(missing_ok=True)
                    return Failure(0, "corrupt_download", "a range that does not continue ours")
            else:
                offset = 0  # the whole blob again
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with open(fd, "r+b") as out:
                out.truncate(offset)
                out.seek(offset)
                for chunk in response.iter_bytes(self.chunk_bytes):
                    offset += len(chunk)
                    if offset > self.max_bytes:
                        break
                    out.write(chunk)
        if offset > self.max_bytes:
            part.unlink(missing_ok=True)
            return Failure(400, "too_large", f"{url} is over {self.max_bytes:,} bytes")
        return self._take(part, sha256, url)

    def clear(self) -> None:
        """Drop every partial download (their task is over)."""
        for leftover in self.directory.glob("*.part"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    @staticmethod
    def _take(part: Path, sha256: str, url: str) -> bytes | Failure:
        data = part.read_bytes()
        part.unlink(missing_ok=True)
        if hashlib.sha256(data).hexdigest() != sha256:
            return Failure(0, "corrupt_download", f"{url} failed its sha256 check")
        return data
