"""The Celery worker: holds the model in memory and classifies batches of jobs."""
