"""The shipped model through the Keras runtime: one trace for every batch size."""

import numpy as np

from common.messages import Photo
from common.model_metadata import ModelMetadata
from common.preprocessing import preprocess
from common.settings import DEFAULT_MODEL_PATH
from tests.conftest import photo
from worker.inference import describe
from worker.runtime import load_runtime


def test_batches_of_any_size_reuse_one_traced_function():
    runtime = load_runtime(DEFAULT_MODEL_PATH)
    metadata = ModelMetadata.for_model(DEFAULT_MODEL_PATH)
    images = np.stack(
        [preprocess(photo(seed=s), metadata.input_size, metadata.preprocessing) for s in range(7)]
    )
    together = runtime.predict(images)
    for size in (1, 3, 7):
        np.testing.assert_allclose(runtime.predict(images[:size]), together[:size], atol=1e-5)
    assert runtime.tracing_count == 1


def test_describe_orders_top_labels_and_uses_the_job_language():
    runtime = load_runtime(DEFAULT_MODEL_PATH)
    probabilities = np.array([0.05, 0.6, 0.1, 0.05, 0.15, 0.05], np.float32)
    photo = Photo(job_id="a" * 32, image_key="k", image_url="u", lang="en", reply_to="",
                  request_id="r")  # fmt: skip
    body = describe(probabilities, photo, runtime)
    assert body["job_id"] == "a" * 32 and body["image_url"] == "u"
    assert body["label"] == "Logam" and body["confidence"] == 60.0
    assert [t["label"] for t in body["top_k"]] == ["Logam", "Kardus", "Kertas"]
    assert body["suggestion"].startswith("Rinse and flatten cans")
