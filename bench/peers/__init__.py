"""The servers people would deploy instead of EcoSnap, serving the same ONNX model with
the same preprocessing, for ``bench.compare``."""
