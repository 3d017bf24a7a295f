"""The plain peer: a Flask app under gunicorn running ONNX Runtime on each request.

No queue and no batching: each request decodes its photo and runs the model on a
batch of one, in the gunicorn thread that received it.
"""

from __future__ import annotations

from flask import Flask, request

from bench.peers.model import PeerModel

app = Flask(__name__)
model = PeerModel()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict() -> dict:
    return model.answer(model.prepare(request.files["file"].read())[None])[0]
