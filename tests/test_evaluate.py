"""Dataset evaluation over HTTP, through the real worker and Redis."""

import io
import zipfile
from dataclasses import replace

import pytest
import requests
from kombu.exceptions import OperationalError
from redis import Redis

from api import create_app
from common.jobs import FINISHED, JobStore
from common.labels import CLASSES, ENGLISH_NAMES
from common.processes import wait_until
from tests.conftest import photo

TIMEOUT = 60


def dataset_zip(per_class: int = 4, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out like public datasets: splits, mixed-language class folders, junk."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, label in enumerate(CLASSES):
            folder = ENGLISH_NAMES[label] if i % 2 else label.upper()
            for n in range(per_class):
                archive.writestr(f"DATASETS/Test/{folder}/{n}.jpg", photo(label, seed=500 + n))
            archive.writestr(f"DATASETS/Train/{folder}/x.jpg", photo(label, seed=1))
        archive.writestr("DATASETS/Test/.DS_Store", b"\0")
        archive.writestr("__MACOSX/DATASETS/._x", b"\0")
        archive.writestr("DATASETS/Test/notes.txt", b"hello")
        archive.writestr("DATASETS/Test/Kaca/broken.jpg", photo("Kaca")[:900])
        archive.writestr("DATASETS/Test/bottles/y.jpg", photo("Kaca"))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def submit(stack, data: bytes, **fields) -> dict:
    response = requests.post(stack.url("/evaluate"), files={"file": ("d.zip", data)},
                             data=fields, timeout=TIMEOUT)  # fmt: skip
    assert response.status_code == 202, response.text
    return response.json()


def finished_job(stack, job_id: str) -> dict:
    def job() -> dict:
        return requests.get(stack.url(f"/jobs/{job_id}"), timeout=TIMEOUT).json()

    wait_until(lambda: job()["status"] in FINISHED, 120, f"job {job_id}")
    return job()


def test_evaluation_reports_seed_metrics_and_more(stack):
    job = finished_job(stack, submit(stack, dataset_zip())["job_id"])
    assert job["status"] == "succeeded", job
    result = job["result"]
    for name in ("accuracy", "precision", "recall", "f1_score"):
        assert 0 <= result[name] <= 100 and round(result[name], 1) == result[name]
    assert result["accuracy"] >= 75
    assert result["average"] == "macro" and set(result["weighted"]) == {
        "precision", "recall", "f1_score"}  # fmt: skip
    assert result["images"] == 24 and result["split"] == "test"
    assert sum(c["support"] for c in result["per_class"].values()) == 24
    matrix = result["confusion_matrix"]
    assert matrix["labels"] == list(CLASSES)
    assert sum(map(sum, matrix["matrix"])) == 24
    assert result["skipped"] == {"system_file": 2, "not_an_image": 1, "unreadable_image": 1,
                                 "no_class_folder": 1, "other_split": 6}  # fmt: skip
    assert result["unmatched_folders"] == ["bottles"]
    assert result["model_version"] and result["duration_s"] >= 0
    assert job["progress"]["done"] == job["progress"]["total"] == 25
    png = requests.get(stack.url(f"/jobs/{job['job_id']}/confusion.png"), timeout=TIMEOUT)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_a_requested_split_is_used(stack):
    job = finished_job(stack, submit(stack, dataset_zip(per_class=1), split="train")["job_id"])
    assert job["status"] == "succeeded" and job["result"]["images"] == 6
    assert job["result"]["split"] == "train"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"../escape/Kaca/a.jpg": b"x"}, "unsafe_member_name"),
        ({"Kaca/bomb.jpg": b"\0" * 3_000_000}, "compression_ratio"),
    ],
)
def test_refused_zips_fail_the_job_with_a_reason(stack, extra, code):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Kaca/ok.jpg", photo())
        for name, data in extra.items():
            archive.writestr(name, data)
    job = finished_job(stack, submit(stack, buffer.getvalue())["job_id"])
    assert job["status"] == "failed" and job["error"]["code"] == code
    assert requests.get(stack.url("/health"), timeout=1).status_code == 200


def test_an_evaluation_can_be_cancelled(stack):
    job_id = submit(stack, dataset_zip(per_class=60))["job_id"]
    response = requests.delete(stack.url(f"/jobs/{job_id}"), timeout=TIMEOUT)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = requests.delete(stack.url(f"/jobs/{job_id}"), timeout=TIMEOUT)
    assert again.status_code == 409
    predicted = requests.post(stack.url("/predict?wait=20"), files={"file": ("p.jpg", photo())},
                              timeout=TIMEOUT)  # fmt: skip
    assert predicted.status_code == 200
    job = requests.get(stack.url(f"/jobs/{job_id}"), timeout=TIMEOUT).json()
    assert job["status"] == "cancelled" and "result" not in job


def test_bad_evaluate_requests(client, settings):
    assert client.post("/evaluate").status_code == 400
    not_zip = client.post("/evaluate", data={"file": (io.BytesIO(b"hello"), "d.zip")},
                          content_type="multipart/form-data")  # fmt: skip
    assert not_zip.status_code == 415
    both = client.post(
        "/evaluate",
        data={"file": (io.BytesIO(b"PK\x03\x04"), "d.zip"), "dataset_url": "gs://b/d.zip"},
        content_type="multipart/form-data",
    )
    assert both.status_code == 400 and both.get_json()["error"]["code"] == "ambiguous_input"
    outside = client.post("/evaluate", json={"dataset_url": "https://example.com/d.zip"})
    assert outside.status_code == 400 and outside.get_json()["error"]["code"] == "url_not_allowed"
    small = create_app({"TESTING": True, "SETTINGS": replace(settings, max_dataset_mb=0.01)})
    big = small.test_client().post(
        "/evaluate", data={"file": (io.BytesIO(b"PK\x03\x04" + b"\0" * 200_000), "d.zip")},
        content_type="multipart/form-data",
    )  # fmt: skip
    assert big.status_code == 413 and "Datasets" in big.get_json()["error"]["message"]
    predict_job = client.post("/predict", data={"file": (io.BytesIO(photo()), "p.jpg")},
                              content_type="multipart/form-data").get_json()  # fmt: skip
    assert client.delete(f"/jobs/{predict_job['job_id']}").status_code == 409
    assert client.delete(f"/jobs/{'0' * 32}").status_code == 404


def test_a_job_the_broker_does_not_take_is_accepted_and_kept_to_send_again(settings, monkeypatch):
    app = create_app({"TESTING": True, "SETTINGS": replace(settings, max_evaluations=10_000)})

    def refuse(*args, **kwargs):
        raise OperationalError("the broker is away")

    monkeypatch.setattr(app.extensions["ecosnap"]["celery"], "send_task", refuse)
    zip_file = {"file": (io.BytesIO(dataset_zip()), "d.zip")}
    answer = app.test_client().post("/evaluate", data=zip_file, content_type="multipart/form-data")
    assert answer.status_code == 202, answer.get_json()
    record = JobStore(Redis.from_url(settings.redis_url), 60).get(answer.get_json()["job_id"])
    assert record["status"] == "queued" and "message" in record  # a worker sends it from here


def test_evaluate_a_zip_in_the_bucket(gcs_stack):
    from google.cloud import storage

    bucket = storage.Client().bucket("ecosnap-test")
    bucket.blob("datasets/test.zip").upload_from_string(dataset_zip(per_class=2))
    response = requests.post(gcs_stack.url("/evaluate"),
                             json={"dataset_url": "gs://ecosnap-test/datasets/test.zip"},
                             timeout=TIMEOUT)  # fmt: skip
    assert response.status_code == 202, response.text
    job = finished_job(gcs_stack, response.json()["job_id"])
    assert job["status"] == "succeeded" and job["result"]["images"] == 12
    missing = requests.post(gcs_stack.url("/evaluate"),
                            json={"dataset_url": "gs://ecosnap-test/datasets/none.zip"},
                            timeout=TIMEOUT)  # fmt: skip
    assert missing.status_code == 404


def test_cli_shows_progress_prints_a_table_and_saves_the_picture(stack, tmp_path, capsys):
    from cli.main import main

    dataset = tmp_path / "data.zip"
    dataset.write_bytes(dataset_zip(per_class=6))
    picture = tmp_path / "cm.png"
    code = main(["evaluate", str(dataset), "--api", stack.base_url, "--output", str(picture)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "100.0% 37/37 images" in err
    assert "accuracy" in out and "Plastik" in out and "weighted" in out
    assert "folders matching no class: bottles" in out
    assert picture.read_bytes().startswith(b"\x89PNG")
