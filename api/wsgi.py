"""WSGI entry point for gunicorn: ``gunicorn api.wsgi:app``."""

from api import create_app
from common.logs import configure

configure("api")
app = create_app()
