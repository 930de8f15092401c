"""The floor for ``bench/api.py``: a hello-world Flask app under the same gunicorn config.

gunicorn -c python:widget.gunicorn_conf --pythonpath bench hello_app:app
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "Hello, world!"
