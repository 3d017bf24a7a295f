"""Multipart parsing: the fast parser gives what Werkzeug's gives, and falls back to it."""

import io

import multipart
import pytest
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.test import EnvironBuilder

from api import forms
from api.forms import Request
from bench.load import multipart as encoded_body
from tests.conftest import photo


@pytest.fixture
def fast_parses(monkeypatch):
    """How many bodies the ``multipart`` library parsed to the end."""
    parsed = []
    original = forms.FormDataParser._parsed

    def counting(self, body, boundary):
        result = original(self, body, boundary)
        parsed.append(len(body))
        return result

    monkeypatch.setattr(forms.FormDataParser, "_parsed", counting)
    return parsed


def request_for(body: bytes, content_type: str) -> Request:
    environ = EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ()
    return Request(environ)


def test_a_photo_upload_is_parsed_by_the_fast_parser_as_werkzeug_would(fast_parses):
    data = photo()
    body, content_type = encoded_body(data)
    form = request_for(body, content_type)
    upload = form.files["file"]
    assert (upload.filename, upload.content_type, upload.read()) == ("p.jpg", "image/jpeg", data)
    assert len(fast_parses) == 1


def test_fields_and_files_match_werkzeug_for_a_mixed_body(fast_parses):
    builder = EnvironBuilder(method="POST", data={"split": "test", "lang": "ünï",
                             "file": (io.BytesIO(b"PK\x03\x04zip"), "d.zip")})  # fmt: skip
    environ = builder.get_environ()
    body = environ["wsgi.input"].read()
    ours = request_for(body, environ["CONTENT_TYPE"])
    theirs = request_for(body, environ["CONTENT_TYPE"])
    theirs.form_data_parser_class = forms.WerkzeugFormDataParser
    assert ours.form.to_dict() == theirs.form.to_dict() == {"split": "test", "lang": "ünï"}
    assert ours.files["file"].read() == theirs.files["file"].read() == b"PK\x03\x04zip"
    assert len(fast_parses) == 1


def test_a_body_the_fast_parser_refuses_is_read_by_werkzeug(fast_parses):
    """Werkzeug's own test client writes an empty file part with no line break before
    the closing boundary; ``multipart`` refuses it, Werkzeug reads it."""
    environ = EnvironBuilder(method="POST", data={"file": (io.BytesIO(b""), "e.jpg")}).get_environ()
    body = environ["wsgi.input"].read()
    boundary = environ["CONTENT_TYPE"].split("boundary=")[1].strip('"')
    with pytest.raises(multipart.MultipartError):
        list(multipart.MultipartParser(io.BytesIO(body), boundary, len(body), strict=True))
    upload = request_for(body, environ["CONTENT_TYPE"]).files["file"]
    assert (upload.filename, upload.read()) == ("e.jpg", b"")
    assert fast_parses == []


def test_large_bodies_stream_through_werkzeug(fast_parses, monkeypatch):
    monkeypatch.setattr(forms, "FAST_PARSE_MAX_BYTES", 1000)
    data = photo()
    body, content_type = encoded_body(data)
    assert request_for(body, content_type).files["file"].read() == data
    assert fast_parses == []


def test_a_field_over_the_form_memory_limit_is_refused_as_werkzeug_does(fast_parses):
    environ = EnvironBuilder(method="POST", data={"url": "x" * 600_000,
                             "file": (io.BytesIO(b"x"), "p.jpg")}).get_environ()  # fmt: skip
    body = environ["wsgi.input"].read()
    for parser in (forms.FormDataParser, forms.WerkzeugFormDataParser):
        request = request_for(body, environ["CONTENT_TYPE"])
        request.form_data_parser_class = parser
        with pytest.raises(RequestEntityTooLarge):
            request.form.get("url")


def test_large_photos_stay_in_memory(fast_parses):
    data = photo(size=(2000, 1500))
    assert len(data) > 64 * 1024  # above multipart's own spooling threshold
    upload = request_for(*encoded_body(data)).files["file"]
    assert isinstance(upload.stream, io.BytesIO) and upload.read() == data
