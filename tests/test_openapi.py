"""The OpenAPI document against the live stack: schemathesis generates requests for
every documented operation (valid ones and broken ones) and checks each answer: never
a 5xx but the documented 503s, and status, content type, headers and body as the
document says. Keys are on, so the key and admin paths are the ones exercised."""

from __future__ import annotations

import re

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import positive_data_acceptance

from api.openapi import DOCUMENT
from tests.conftest import run_stack

USER_KEY = "contract-user-key-0123456789"
ADMIN_KEY = "contract-admin-key-0123456789"


@pytest.fixture(scope="module")
def contract_stack(redis_url, tmp_path_factory):
    yield from run_stack(
        redis_url.rsplit("/", 1)[0] + "/6", tmp_path_factory.mktemp("contract"),
        {"API_KEYS": f"tester={USER_KEY}", "ADMIN_API_KEY": ADMIN_KEY},
    )  # fmt: skip


# Loaded from the module the API serves it from (the test below checks the stack
# serves this very document): schemathesis's lazy fixture loader does not run under
# pytest 9.
schema = schemathesis.openapi.from_dict(DOCUMENT)


def key_for(path: str) -> str:
    return ADMIN_KEY if path.startswith("/models") else USER_KEY


@schema.parametrize()
@hypothesis.settings(
    max_examples=25,
    derandomize=True,  # the same cases on every run: CI stays reproducible
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_answer_matches_the_document(case, contract_stack):
    # Random bytes fit the document's "binary" file but are no photo, zip or model:
    # a 4xx for them is right, so valid-looking data is not required to be accepted.
    case.call_and_validate(
        base_url=contract_stack.base_url,
        headers={"Authorization": f"Bearer {key_for(case.path)}"},
        excluded_checks=[positive_data_acceptance],
    )


# The routes that serve pages for people, not the JSON API.
PAGES = {"static", "page.index", "openapi.document", "openapi.docs", "openapi.docs_asset"}


def test_the_document_covers_every_route(contract_stack, app):
    document = requests.get(contract_stack.url("/openapi.json"), timeout=10).json()
    assert document == DOCUMENT
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    routed = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if rule.endpoint not in PAGES
    }
    assert routed == documented


def test_the_docs_page_is_served_offline(contract_stack):
    page = requests.get(contract_stack.url("/docs"), timeout=10)
    assert page.status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN, every asset local
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "init.js"):
        answer = requests.get(contract_stack.url(f"/docs/assets/{asset}"), timeout=10)
        assert answer.status_code == 200 and len(answer.content) > 20, asset
