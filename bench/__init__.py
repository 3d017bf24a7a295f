"""The benchmark: ``python -m bench`` or ``ecosnap bench``."""
