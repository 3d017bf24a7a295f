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
CMD ["gunicorn", "--bind", "0.0.0.0:8080", "--workers", "2", "--worker-class", "gthread", "--threads", "16", "--graceful-timeout", "40", "api.wsgi:app"]
