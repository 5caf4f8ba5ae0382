"""Uploads of ``dymsta serve``: the multipart field ``file`` streamed into a private folder, under a size cap.

The body is read chunk by chunk as it arrives and parsed as it goes (python-multipart's streaming parser); the
file's bytes go straight to disk. A ``Content-Length`` over the cap is refused before any byte of the body is
read, and a body without one (chunked) is refused as soon as its count passes the cap. Nothing is judged by the
file's name: its name only labels the result, and the file is opened by the decoder, which decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from starlette.requests import ClientDisconnect, Request

try:  # python-multipart >= 0.0.13 names its module python_multipart
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover - older releases
    from multipart.multipart import MultipartParser, parse_options_header

__all__ = ["FIELD", "Upload", "UploadError", "receive_upload", "safe_name"]

FIELD = "file"  # the multipart field that holds the video
_UNSAFE = re.compile(r"[^\w.\- ()\[\]+,]")  # what a stored name keeps: word characters and plain punctuation
_MAX_NAME = 100


class UploadError(Exception):
    """An upload that cannot be taken; ``status`` is the HTTP status, ``str(e)`` one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """A received file.

    Attributes:
        path: where it lies (inside the request's private folder).
        name: its name as the client gave it, made safe (:func:`safe_name`): what results call it.
        size: bytes of the file.
        body_bytes: bytes of the whole request body read.
    """

    path: Path
    name: str
    size: int
    body_bytes: int


def safe_name(name: str | None) -> str:
    """The client's file name reduced to a plain base name: no folders, no leading dots, at most 100 characters
    of ``[\\w.-()[]+, ]``; ``upload`` when nothing is left."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE.sub("_", base).lstrip(". ").strip()
    if len(base) > _MAX_NAME:
        stem, dot, suffix = base.rpartition(".")
        suffix = suffix[:10] if dot else ""
        base = base[: _MAX_NAME - len(suffix) - 1] + "." + suffix if suffix else base[:_MAX_NAME]
    return base or "upload"


class _FilePart:
    """python-multipart callbacks: the first part named :data:`FIELD` is written to ``folder``; others are skipped."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None
        self.name = ""
        self.size = 0
        self._file: BinaryIO | None = None
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._writing = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1")
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        field = options.get(b"name", b"").decode("utf-8", "replace")
        self._writing = field == FIELD and self.path is None
        if self._writing:
            self.name = safe_name(options.get(b"filename", b"").decode("utf-8", "replace"))
            self.path = self.folder / self.name
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed at the part's end or by close()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writing and self._file is not None:
            self._file.write(data[start:end])
            self.size += end - start

    def _part_end(self) -> None:
        self._writing = False
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive_upload(request: Request, folder: Path, *, limit: int) -> Upload:
    """Stream the multipart field ``file`` of ``request`` into ``folder`` (which the caller owns and removes).

    Args:
        request: a ``multipart/form-data`` POST.
        folder: a private folder for this request alone.
        limit: the largest request body accepted, in bytes.

    Raises:
        UploadError: 413 over ``limit`` (from ``Content-Length`` before reading, or while reading); 422 not
            multipart, or no field ``file``; 400 a malformed body or a client that went away mid-upload.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise UploadError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise UploadError(413, _too_large(int(declared), limit))
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(422, f"send the video as multipart/form-data in the field {FIELD!r}")
    part = _FilePart(folder)
    parser = MultipartParser(boundary, part.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise UploadError(413, _too_large(received, limit, partial=True))
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect:
        raise UploadError(400, "the client closed the connection during the upload") from None
    except UploadError:
        raise
    except Exception as e:  # noqa: BLE001 - python-multipart's parse errors, whatever their class
        raise UploadError(400, f"malformed multipart body ({type(e).__name__}: {e})".split("\n")[0]) from None
    finally:
        part.close()
    if part.path is None:
        raise UploadError(422, f"the multipart body has no field {FIELD!r} (send the video as {FIELD}=@clip.mp4)")
    return Upload(path=part.path, name=part.name, size=part.size, body_bytes=received)


def _too_large(size: int, limit: int, *, partial: bool = False) -> str:
    what = f"more than {limit / 2**20:.4g} MiB sent" if partial else f"{size / 2**20:.4g} MiB"
    return f"the upload is too large ({what}; the limit is {limit / 2**20:.4g} MiB)"
