"""Where photos live: a local folder (default) or a Google Cloud Storage bucket.

Stored names are always generated (``uploads/<uuid>.<ext>``), never the client's
filename. Workers read images by key from the same storage, so the queue carries
short keys instead of megabytes of pixels.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar
from urllib.parse import quote, unquote, urlparse

from common.settings import Settings

T = TypeVar("T")
GCS_PUBLIC_HOST = "storage.googleapis.com"
UPLOAD_PREFIX = "uploads/"
_LOCAL_KEY = re.compile(r"^uploads/[0-9a-f]{32}\.(jpg|png|webp|zip)$")


class StorageError(LookupError):
    """A key or URL that names nothing readable in the configured storage."""


# The error of a job whose image the storage could not give in time.
STORAGE_UNAVAILABLE = "storage_unavailable"


class StorageUnavailable(Exception):
    """The storage did not answer in time or failed: the service's fault, not the input's."""


class Storage(Protocol):
    def save(self, data: bytes, extension: str, content_type: str, name: str | None = None) -> str:
        """Store ``data`` under ``uploads/<name>.<extension>`` (``name``: 32 hex digits,
        a job id; by default a new one); returns its key."""
        ...

    def save_file(self, stream: BinaryIO, extension: str, content_type: str) -> str:
        """Store a possibly large upload without holding it in memory."""
        ...

    def read(self, key: str) -> bytes: ...

    def size(self, key: str) -> int | None: ...

    def public_url(self, key: str, base_url: str) -> str: ...

    def local_path(self, key: str) -> Path:
        """A file on this machine holding the object (downloaded once if remote)."""
        ...

    def prune(self, max_age_s: float) -> int:
        """Remove this machine's stored files unused for ``max_age_s``; how many went."""
        ...


def remove_files_older_than(folder: Path, max_age_s: float) -> int:
    """Delete the files directly in ``folder`` last modified over ``max_age_s`` ago.

    Several workers may sweep one shared folder at once: a file another removed
    first is skipped.
    """
    cutoff = time.time() - max_age_s
    removed = 0
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


def new_upload_key(extension: str, name: str | None = None) -> str:
    return f"{UPLOAD_PREFIX}{name or uuid.uuid4().hex}.{extension}"


class LocalStorage:
    """A folder on disk, served back by the API under ``/uploads/<name>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: str) -> Path:
        if not _LOCAL_KEY.match(key):
            raise StorageError(f"No stored file is named {key!r}.")
        return self.root / key.removeprefix(UPLOAD_PREFIX)

    def save(self, data: bytes, extension: str, content_type: str, name: str | None = None) -> str:
        return self._write(io.BytesIO(data), new_upload_key(extension, name))

    def save_file(self, stream: BinaryIO, extension: str, content_type: str) -> str:
        return self._write(stream, new_upload_key(extension))

    def _write(self, stream: BinaryIO, key: str) -> str:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        with partial.open("wb") as output:
            shutil.copyfileobj(stream, output, 1 << 20)
        partial.replace(path)
        return key

    def read(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"No stored file is named {key!r}.") from exc

    def size(self, key: str) -> int | None:
        try:
            return self.path_for(key).stat().st_size
        except (FileNotFoundError, StorageError):
            return None

    def public_url(self, key: str, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{key}"

    def local_path(self, key: str) -> Path:
        path = self.path_for(key)
        try:
            os.utime(path)  # used now: the sweep keeps it
        except FileNotFoundError as exc:
            raise StorageError(f"No stored file is named {key!r}.") from exc
        return path

    def prune(self, max_age_s: float) -> int:
        """Uploads older than the retention, and partial files a crash left behind."""
        return remove_files_older_than(self.root, max_age_s)


class GCSStorage:
    """A Google Cloud Storage bucket; honours ``STORAGE_EMULATOR_HOST`` for tests.

    Every call is bounded: ``timeout_s`` to connect and for each answer, and the
    library's retries of a transient failure stop after two such timeouts; a bucket
    that does not answer is ``StorageUnavailable`` within seconds, not minutes.
    """

    def __init__(self, bucket_name: str, cache_dir: Path, timeout_s: float) -> None:
        from google.cloud import storage
        from google.cloud.storage.retry import DEFAULT_RETRY

        self.bucket_name = bucket_name
        self.bucket = storage.Client().bucket(bucket_name)
        self.cache_dir = cache_dir
        # Every call's timeout and bounded retry (the registry's bucket store uses them too).
        self.bounds = {"timeout": timeout_s, "retry": DEFAULT_RETRY.with_timeout(2 * timeout_s)}

    def bounded(self, action: Callable[[], T]) -> T:
        """``action``'s result; a bucket that fails or does not answer is
        ``StorageUnavailable`` (a missing object and a failed precondition pass)."""
        with _unavailable_on_failure():
            return action()

    def save(self, data: bytes, extension: str, content_type: str, name: str | None = None) -> str:
        return self._write(io.BytesIO(data), new_upload_key(extension, name), content_type)

    def save_file(self, stream: BinaryIO, extension: str, content_type: str) -> str:
        return self._write(stream, new_upload_key(extension), content_type)

    def _write(self, stream: BinaryIO, key: str, content_type: str) -> str:
        with _unavailable_on_failure():
            # Retrying is safe: the key is new, so a repeat writes the same bytes again.
            self.bucket.blob(key).upload_from_file(stream, content_type=content_type, **self.bounds)
        return key

    def read(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            with _unavailable_on_failure():
                return self.bucket.blob(key).download_as_bytes(**self.bounds)
        except NotFound as exc:
            raise StorageError(f"gs://{self.bucket_name}/{key} does not exist.") from exc

    def size(self, key: str) -> int | None:
        with _unavailable_on_failure():
            blob = self.bucket.get_blob(key, **self.bounds)
        return None if blob is None else blob.size

    def public_url(self, key: str, base_url: str) -> str:
        return f"https://{GCS_PUBLIC_HOST}/{self.bucket_name}/{quote(key)}"

    def local_path(self, key: str) -> Path:
        from google.api_core.exceptions import NotFound

        with _unavailable_on_failure():
            blob = self.bucket.get_blob(key, **self.bounds)
        if blob is None:
            raise StorageError(f"gs://{self.bucket_name}/{key} does not exist.")
        path = self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}-{blob.generation}"
        try:
            os.utime(path)  # used now: the sweep keeps it
        except FileNotFoundError:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{uuid.uuid4().hex}.part")
            try:
                # Into an open file: ``download_to_filename`` would date the copy to
                # the object's upload, and the sweep would remove it as soon as it landed.
                with partial.open("wb") as output, _unavailable_on_failure():
                    blob.download_to_file(output, **self.bounds)
            except NotFound as exc:
                partial.unlink(missing_ok=True)
                raise StorageError(f"gs://{self.bucket_name}/{key} does not exist.") from exc
            partial.replace(path)
        return path

    def prune(self, max_age_s: float) -> int:
        """Only this machine's downloaded copies: the bucket's own lifecycle rules
        decide how long its objects live."""
        return remove_files_older_than(self.cache_dir, max_age_s)


@contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """A bucket's network or server failure, after the library's own bounded retries,
    as ``StorageUnavailable``; a missing object (``NotFound``) passes through."""
    from google.api_core.exceptions import GoogleAPIError, NotFound, PreconditionFailed
    from google.auth.exceptions import TransportError
    from requests import RequestException

    try:
        yield
    except (NotFound, PreconditionFailed):
        raise
    except (GoogleAPIError, TransportError, RequestException, ConnectionError) as exc:
        raise StorageUnavailable(f"The bucket did not answer: {type(exc).__name__}") from exc


def storage_from_settings(settings: Settings) -> Storage:
    if settings.gcs_bucket:
        return GCSStorage(
            settings.gcs_bucket, settings.var_dir / "bucket-cache", settings.storage_timeout_s
        )
    return LocalStorage(settings.upload_dir)


def bucket_key_from_url(url: str, bucket: str | None) -> str:
    """The object key that ``url`` names in ``bucket``; anything else is refused.

    Accepted: ``gs://BUCKET/key`` and ``https://storage.googleapis.com/BUCKET/key``.
    Nothing here fetches the URL; the caller reads the key through ``GCSStorage``.
    """
    if not bucket:
        raise ValueError("URL predictions need a bucket; this service has none configured.")
    parsed = urlparse(url.strip())
    if parsed.scheme == "gs":
        url_bucket, key = parsed.netloc, parsed.path.lstrip("/")
    elif parsed.scheme == "https" and parsed.netloc == GCS_PUBLIC_HOST and not parsed.query:
        url_bucket, _, key = unquote(parsed.path).lstrip("/").partition("/")
    else:
        raise ValueError(
            f"Only gs://{bucket}/... or https://{GCS_PUBLIC_HOST}/{bucket}/... URLs are accepted."
        )
    if url_bucket != bucket or not key or key.endswith("/"):
        raise ValueError(f"The URL must name an object in the bucket {bucket!r}.")
    return key
