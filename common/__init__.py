"""Facts and helpers shared by the API, the worker and training (no TensorFlow here)."""
