FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY api api
COPY worker worker
COPY common common
COPY cli cli
COPY training training
COPY models models
RUN pip install --no-cache-dir --no-deps .
EXPOSE 8080
# The graceful timeout outlasts the longest ?wait (30 s): requests in hand get answers.
# ?wait requests may hold all threads but 4 (API_THREADS tells the app how many).
ENV API_THREADS=64
# The API's metrics directory is made fresh by its own command: workers (same image)
# must not see it, or their metrics would go to files instead of their port.
CMD ["sh", "-c", "rm -rf /tmp/api-metrics && mkdir -p /tmp/api-metrics && PROMETHEUS_MULTIPROC_DIR=/tmp/api-metrics exec gunicorn --bind 0.0.0.0:8080 --workers 2 --worker-class api.gunicorn_worker.ThreadWorker --threads $API_THREADS --graceful-timeout 40 api.wsgi:app"]
