"""Reading a ``multipart/form-data`` body as it arrives, into files the server names itself.

The body is parsed chunk by chunk (python-multipart's streaming parser) and the file parts are
written straight into the request's own folder, so the size limit holds while reading: an
oversized upload is refused (413) after at most the limit, never held whole in memory, and no
copy lands in the system's temporary folder (where Starlette's own form parser would spool it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 1024  # an option value (pose, seed, ...) is a few characters


class UploadError(Exception):
    """A request body that cannot be taken; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Form:
    """A parsed form: ``files`` part name -> the file it was written to; ``fields`` name -> text."""

    files: dict[str, Path] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


class _Sink:
    """python-multipart callbacks: each part's headers, then its data into a file (the parts
    named in ``file_names``) or a short text field."""

    def __init__(self, directory: Path, file_names: tuple[str, ...], field_names: tuple[str, ...]) -> None:
        self.directory, self.file_names, self.field_names = directory, file_names, field_names
        self.form = Form()
        self._header_name = self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._file: BinaryIO | None = None
        self._text = bytearray()
        self._seen: set[str] = set()

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_val, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data,
                "on_part_end": self._end}

    def _begin(self) -> None:
        self._headers, self._name, self._text = {}, None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_val(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name not in self.file_names + self.field_names:
            expected = ", ".join(self.file_names + self.field_names)
            raise UploadError(422, f"unexpected form field {name!r}: send {expected}")
        if name in self._seen:
            raise UploadError(422, f"the form field {name!r} is given twice")
        self._name = name
        self._seen.add(name)
        if name in self.file_names:  # the client's file name is never used: the server names the file
            self._file = (self.directory / name).open("wb")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])
            return
        self._text += data[start:end]
        if len(self._text) > MAX_FIELD_BYTES:
            raise UploadError(422, f"the form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def _end(self) -> None:
        """A complete part (one cut off by a truncated body never gets here, so is not taken)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self.form.files[self._name] = self.directory / self._name
        elif self._name is not None:
            self.form.fields[self._name] = self._text.decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _boundary(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(422, "expected a multipart/form-data body with the files image and audio")
    return params[b"boundary"]


async def read_form(headers, body: AsyncIterator[bytes], directory: Path, limit: int,
                    file_names: tuple[str, ...], field_names: tuple[str, ...]) -> Form:
    """Parse a multipart body into ``directory`` (``directory / NAME`` for each file part).

    Args:
        headers: the request headers (Content-Type, Content-Length); body: its chunks.
        limit: the most bytes the body may have (413 beyond it: checked on Content-Length
            first, then on what arrives, so a lying or missing Content-Length does not help).
        file_names, field_names: the parts accepted; any other is a 422.

    Raises:
        UploadError: 413 (too large) or 422 (not a form, unknown or repeated part, truncated).
    """
    boundary = _boundary(headers.get("content-type"))
    too_large = UploadError(413, f"the upload is larger than the server's limit of {limit / 2**20:.3g} MiB")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    sink = _Sink(directory, file_names, field_names)
    parser = MultipartParser(boundary, sink.callbacks())
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > limit:
                raise too_large
            _feed(parser, chunk)
        _feed(parser, None)
    finally:
        sink.close()
    return sink.form


def _feed(parser: MultipartParser, chunk: bytes | None) -> None:
    """Parse one more chunk (None: the end), python-multipart's own errors as 422s."""
    try:
        parser.write(chunk) if chunk is not None else parser.finalize()
    except UploadError:
        raise
    except Exception as err:
        raise UploadError(422, f"cannot parse the multipart body: {err}") from None
