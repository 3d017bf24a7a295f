"""Multipart bodies parsed by the ``multipart`` library, Werkzeug's decoder as fallback.

Every photo upload is a multipart body, parsed once per request. On a 30 KB photo
Werkzeug's pure-Python decoder spends about 0.26 ms of CPU and the ``multipart``
library (the parser behind Bottle) about 0.02 ms: a tenth of what the API spends on
a photo in all (README, Performance). A body up to ``FAST_PARSE_MAX_BYTES`` is read
into memory and parsed by ``multipart``; one it refuses (it is stricter than
Werkzeug about odd but readable bodies) and any larger body (datasets, models) are
parsed by Werkzeug as before, so fields, files, limits and errors stay Werkzeug's.
"""

from __future__ import annotations

import io
from typing import IO, Any

import flask
import multipart
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser as WerkzeugFormDataParser

FAST_PARSE_MAX_BYTES = 16 * 1024 * 1024


class FormDataParser(WerkzeugFormDataParser):
    def parse(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str] | None = None,
    ) -> tuple[IO[bytes], Any, Any]:
        boundary = (options or {}).get("boundary")
        if (
            mimetype != "multipart/form-data"
            or not boundary
            or content_length is None
            or content_length > FAST_PARSE_MAX_BYTES
        ):
            return super().parse(stream, mimetype, content_length, options)
        body = stream.read(content_length)
        try:
            return (stream, *self._parsed(body, boundary))
        except multipart.MultipartError:
            return super().parse(io.BytesIO(body), mimetype, content_length, options)

    def _parsed(self, body: bytes, boundary: str) -> tuple[Any, Any]:
        # The body is in memory already: its parts stay there too (multipart would
        # spool parts over 64 KB to temporary files).
        parser = multipart.MultipartParser(
            io.BytesIO(body),
            boundary,
            len(body),
            part_limit=self.max_form_parts or 1000,
            spool_limit=len(body),
            memory_limit=len(body),
            strict=True,
        )
        fields, files = [], []
        for part in parser:
            if part.filename is None:
                if self.max_form_memory_size and part.size > self.max_form_memory_size:
                    raise RequestEntityTooLarge()  # Werkzeug's limit on a field's size
                fields.append((part.name, part.value))
            else:
                upload = FileStorage(part.file, part.filename, part.name, part.content_type,
                                     headers=Headers(part.headerlist))  # fmt: skip
                files.append((part.name, upload))
        return self.cls(fields), self.cls(files)


class Request(flask.Request):
    form_data_parser_class = FormDataParser
