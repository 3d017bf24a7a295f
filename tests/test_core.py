"""The worker's core functions with a stub model and local storage, no worker process:
answering a batch of photos (``worker.inference``) and evaluating a dataset in
chunks (``worker.evaluation``). The job store is a real Redis database of its own."""

import io
import zipfile

import numpy as np
import pytest
from redis import ConnectionError as RedisConnectionError
from redis import Redis

from common.batch_stats import BATCH_SIZES_KEY, batch_sizes
from common.jobs import JobStore
from common.labels import CLASSES
from common.messages import Evaluate, Predict, ValidateModel
from common.model_metadata import ModelMetadata
from common.preprocessing import ImageLimits
from common.processes import wait_until
from common.settings import Settings
from common.storage import LocalStorage
from tests.conftest import photo
from worker import evaluation, validation
from worker.inference import answer_batch, classify

LIMITS = ImageLimits()
PREDICTED = "Kertas"


class StubRuntime:
    """Says ``PREDICTED`` (90%) for every image and counts its calls."""

    def __init__(self, fails: bool = False) -> None:
        self.metadata = ModelMetadata(version="stub-1", description="stub", file="m", sha256="0")
        self.input_shape = (None, 128, 128, 3)
        self.batches: list[int] = []
        self.fails = fails

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.fails:
            raise RuntimeError("the model broke")
        self.batches.append(len(batch))
        probabilities = np.full((len(batch), len(CLASSES)), 0.02, np.float32)
        probabilities[:, CLASSES.index(PREDICTED)] = 0.9
        return probabilities


class BlippingJobStore(JobStore):
    """A job store whose ``mark_running`` meets a dropped Redis connection."""

    def mark_running(self, job_ids: list[str]) -> tuple[list[str], list[str]]:
        raise RedisConnectionError("Connection reset by peer")


@pytest.fixture
def jobs(redis_url):
    redis = Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    redis.delete(BATCH_SIZES_KEY)
    return JobStore(redis, ttl_s=60)


@pytest.fixture
def storage(tmp_path):
    return LocalStorage(tmp_path / "uploads")


def queued(jobs: JobStore, storage: LocalStorage, data: bytes | None = None, **fields) -> dict:
    """A queued job's photo as a message carries it (``data`` None: no stored file)."""
    key = storage.save(data, "jpg", "image/jpeg") if data is not None else "uploads/" + "0" * 32
    job_id = jobs.create("predict", Predict(photos=[]))
    sent = {"job_id": job_id, "image_key": key, "image_url": f"http://h/{key}", "lang": "id"}
    return sent | {"reply_to": "", "request_id": "r"} | fields


def message(*photos: dict):
    """What the worker receives for one ``Predict`` message: its args and kwargs."""
    return (), {"photos": list(photos)}


def test_a_bad_image_fails_only_its_own_job(jobs, storage):
    good = [queued(jobs, storage, photo(seed=s)) for s in (1, 2)]
    corrupt = queued(jobs, storage, photo()[:1500])
    missing = queued(jobs, storage)
    runtime = StubRuntime()
    answer_batch([message(*good, corrupt), message(missing)], runtime, storage, jobs, LIMITS, 32)
    assert runtime.batches == [2]  # one model call for the readable ones
    for fields in good:
        record = jobs.get(fields["job_id"])
        assert record["status"] == "succeeded" and record["result"]["label"] == PREDICTED
        assert record["result"]["image_url"] == fields["image_url"]
        assert record["result"]["model_version"] == "stub-1"
    assert jobs.get(corrupt["job_id"])["error"]["code"] == "corrupt_image"
    assert jobs.get(missing["job_id"])["error"]["code"] == "image_not_found"
    assert batch_sizes(jobs.redis) == {4: 1}


def test_the_model_sees_at_most_a_batch_of_images_per_call(jobs, storage):
    photos = [queued(jobs, storage, photo(seed=s)) for s in range(5)]
    runtime = StubRuntime()
    answer_batch([message(*photos[:3]), message(*photos[3:])], runtime, storage, jobs, LIMITS, 2)
    assert runtime.batches == [2, 2, 1]
    assert {jobs.get(p["job_id"])["status"] for p in photos} == {"succeeded"}


def test_a_photo_whose_job_has_finished_is_dropped_not_run_again(jobs, storage):
    """Its message came back (a redelivery): the first answer stands."""
    done, fresh = queued(jobs, storage, photo(seed=1)), queued(jobs, storage, photo(seed=2))
    jobs.finish({done["job_id"]: {"label": "Kaca"}}, {})
    runtime = StubRuntime()
    answer_batch([message(done, fresh)], runtime, storage, jobs, LIMITS, 32)
    assert runtime.batches == [1]
    assert jobs.get(done["job_id"])["result"] == {"label": "Kaca"}
    assert jobs.get(fresh["job_id"])["result"]["label"] == PREDICTED


def test_an_empty_batch_calls_no_model(storage):
    runtime = StubRuntime()
    assert classify([], runtime, storage, LIMITS, 32) == ({}, {})
    assert runtime.batches == []


def test_a_malformed_photo_fails_its_job_and_the_rest_are_answered(jobs, storage):
    good = queued(jobs, storage, photo())
    malformed = queued(jobs, storage, photo(), size="large")
    nameless = ((), {"pictures": [good]})  # names no job at all: dropped, logged
    answer_batch([message(good, malformed), nameless], StubRuntime(), storage, jobs, LIMITS, 32)
    assert jobs.get(good["job_id"])["status"] == "succeeded"
    record = jobs.get(malformed["job_id"])
    assert record["status"] == "failed" and record["error"]["code"] == "malformed_message"
    assert "unexpected size" in record["error"]["message"]


def test_a_batch_that_meets_redis_down_changes_no_job_and_asks_to_be_put_back(jobs, storage):
    blipping = BlippingJobStore(jobs.redis, jobs.ttl_s)
    photos = [queued(jobs, storage, photo(seed=s)) for s in (1, 2, 3)]
    assert answer_batch([message(*photos)], StubRuntime(), storage, blipping, LIMITS, 32) is False
    assert {jobs.get(p["job_id"])["status"] for p in photos} == {"queued"}
    # Delivered again once Redis answers: every job is answered.
    assert answer_batch([message(*photos)], StubRuntime(), storage, jobs, LIMITS, 32) is True
    assert {jobs.get(p["job_id"])["status"] for p in photos} == {"succeeded"}


def test_a_model_failure_fails_the_whole_batch_with_a_worker_error(jobs, storage):
    photos = [queued(jobs, storage, photo(seed=s)) for s in (1, 2)]
    with pytest.raises(RuntimeError, match="the model broke"):
        answer_batch([message(*photos)], StubRuntime(fails=True), storage, jobs, LIMITS, 32)
    assert {jobs.get(p["job_id"])["error"]["code"] for p in photos} == {"worker_error"}


def damaged_member_zip() -> bytes:
    """Three good images, one truncated JPEG and one member whose bytes are damaged."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, label in enumerate(("Kaca", "Kertas", "Logam")):
            archive.writestr(f"{label}/{n}.jpg", photo(label, seed=n))
        archive.writestr("Kaca/truncated.jpg", photo("Kaca", seed=9)[:900])
        archive.writestr("Plastik/damaged.jpg", photo("Plastik", seed=8))
    data = bytearray(buffer.getvalue())
    member = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("Plastik/damaged.jpg")
    data[member.header_offset + 30 + len(member.filename) + 200] ^= 0xFF
    return bytes(data)


def started_evaluation(jobs: JobStore, storage: LocalStorage, settings: Settings):
    """An evaluation of ``damaged_member_zip`` in chunks of 2: its job id and chunks."""
    dataset_key = storage.save(damaged_member_zip(), "zip", "application/zip")
    message = Evaluate(dataset_key=dataset_key, split=None)
    job_id = jobs.create("evaluate", message)
    chunks = []
    evaluation.start(job_id, message, storage, jobs,
                     settings, submit_chunk=chunks.append, model_version="stub-1")  # fmt: skip
    return job_id, chunks


def test_an_evaluation_in_chunks_counts_unreadable_members_and_computes_metrics(
    jobs, storage, tmp_path
):
    settings = Settings(var_dir=tmp_path, eval_chunk_size=2)
    job_id, chunks = started_evaluation(jobs, storage, settings)
    assert [len(chunk.items) for chunk in chunks] == [2, 2, 1]
    runtime = StubRuntime()
    for chunk in chunks:
        assert jobs.get(job_id)["status"] == "running"
        evaluation.run_chunk(chunk, lambda version: runtime, storage, jobs, settings, LIMITS)
    record = jobs.get(job_id)
    assert record["status"] == "succeeded"
    result = record["result"]
    assert result["images"] == 3 and result["skipped"] == {"unreadable_image": 2}
    assert result["model_version"] == "stub-1"
    assert result["accuracy"] == pytest.approx(100 / 3, abs=0.1)  # only the Kertas image
    assert jobs.get_blob(job_id, "confusion.png").startswith(b"\x89PNG")


def test_a_chunk_delivered_twice_counts_once(jobs, storage, tmp_path):
    settings = Settings(var_dir=tmp_path, eval_chunk_size=2)
    job_id, chunks = started_evaluation(jobs, storage, settings)
    runtime = StubRuntime()
    for chunk in [chunks[0], chunks[0], *chunks[1:], chunks[-1]]:
        evaluation.run_chunk(chunk, lambda version: runtime, storage, jobs, settings, LIMITS)
    record = jobs.get(job_id)
    assert record["status"] == "succeeded" and record["done"] == "5"
    assert record["result"]["images"] == 3
    assert [len(o["y_true"]) + o["skipped"]["unreadable_image"] for o in
            jobs.chunk_outcomes(job_id)] == [2, 2, 1]  # fmt: skip


def test_a_start_that_comes_again_sends_the_chunks_not_recorded_once(jobs, storage, tmp_path):
    settings = Settings(var_dir=tmp_path, eval_chunk_size=2, broker_lease_s=3)
    job_id, chunks = started_evaluation(jobs, storage, settings)
    runtime = StubRuntime()
    evaluation.run_chunk(chunks[0], lambda version: runtime, storage, jobs, settings, LIMITS)
    message = Evaluate(dataset_key=chunks[0].dataset_key, split=None)

    def start_again() -> list[int]:
        sent = []
        evaluation.start(job_id, message, storage, jobs, settings,
                         submit_chunk=sent.append, model_version="stub-1")  # fmt: skip
        return [chunk.index for chunk in sent]

    assert start_again() == []  # a copy right behind the first run: it sent them
    # Its worker died before sending them all; its message came back after a lease.
    wait_until(lambda: start_again() == [1, 2], 5, "the missing chunks sent again")
    assert start_again() == []


def test_a_chunk_of_a_cancelled_evaluation_classifies_nothing(jobs, storage, tmp_path):
    settings = Settings(var_dir=tmp_path, eval_chunk_size=2)
    job_id, chunks = started_evaluation(jobs, storage, settings)
    assert jobs.cancel(job_id)
    runtime = StubRuntime()
    evaluation.run_chunk(chunks[0], lambda version: runtime, storage, jobs, settings, LIMITS)
    assert runtime.batches == [] and jobs.get(job_id)["status"] == "cancelled"


class UntouchableRegistry:
    def __getattr__(self, name):
        raise AssertionError(f"the registry was used ({name}) for a finished job")


def test_a_validation_whose_job_has_finished_is_not_run_again(jobs):
    job_id = jobs.create("validate_model", ValidateModel(version="v2"), version="v2")
    jobs.transition(job_id, ("queued",), status="succeeded", result="{}")
    validation.run(job_id, "v2", UntouchableRegistry(), jobs)
    assert jobs.get(job_id)["status"] == "succeeded"
