"""The web page at ``/``: a photo's label, each class's confidence and the suggestion;
an operator view to evaluate a dataset zip and see the served model and its versions.

Plain HTML, CSS and a little JavaScript (``api/templates``, ``api/static``), no build
step and nothing from a CDN. The class names and both languages' suggestions are put
into the page from ``common.labels``, so the page switches language without asking the
API and never holds a copy of them. The page calls the same JSON API as any client.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from common.jobs import MAX_WAIT_S
from common.labels import CLASSES, DEFAULT_LANGUAGE, ENGLISH_NAMES, SUGGESTIONS

bp = Blueprint("page", __name__)

# Only the page's own files, pictures it makes from the chosen photo (blob:), and
# calls to this API.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


@bp.get("/")
def index() -> Response:
    labels = {
        "classes": list(CLASSES),
        "english": ENGLISH_NAMES,
        "suggestions": SUGGESTIONS,
        "default_language": DEFAULT_LANGUAGE,
        "wait_s": MAX_WAIT_S,
    }
    response = Response(render_template("index.html", labels=labels))
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
