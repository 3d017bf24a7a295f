"""The API must never load TensorFlow or Keras: it runs in a separate interpreter."""

import subprocess
import sys
import textwrap

from common.settings import PROJECT_ROOT


def test_api_never_imports_tensorflow_or_keras(redis_url):
    script = textwrap.dedent(
        """
        import io, sys
        from api import create_app
        app = create_app()
        client = app.test_client()
        client.get("/model-info")
        client.get("/health")
        client.post("/predict", data={"file": (io.BytesIO(b"x"), "a.jpg")},
                    content_type="multipart/form-data")
        import api.wsgi
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras"})
        print(heavy)
        sys.exit(1 if heavy else 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
