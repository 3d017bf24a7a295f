"""Training, the synthetic demo dataset and dataset loading (imports TensorFlow lazily)."""
