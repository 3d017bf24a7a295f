"""The model registry: versions of one named model, and which one is active.

Layout, in a folder (``<MODEL_REGISTRY>/<MODEL_NAME>/``) or, with ``GCS_BUCKET`` set,
in the bucket (``registry/<MODEL_NAME>/``)::

    active.json                 {"version": ..., "history": [{"version", "activated_at"}]}
    versions/<version>/<file>   the model file (or SavedModel directory)
    versions/<version>/<file>.json   its metadata (``common.model_metadata``)
    versions/<version>/status.json   {"state": "validating" | "valid" | "invalid", ...}

The store is the source of truth; the API writes uploads and the active pointer,
workers write validation outcomes. Redis only carries a notice that the pointer
moved (``ACTIVATION_CHANNEL``), so a worker that missed it still finds the pointer
on its next periodic look.

Every change of a JSON record is a compare-and-set: read it with its token, write it
only if nobody changed it since, else read again and redo the change. In a folder
the token is the file's bytes, checked under a lock (one host, or a volume every
process shares); in a bucket it is the object's generation, checked by the bucket
itself (``if_generation_match``), so hosts that share nothing but the network change
the pointer atomically. A version appears complete or not at all, and is never
replaced: in a folder it is renamed into place; in a bucket each of its objects is
created only if absent. Workers read a bucket's model files into a local cache keyed
by sha256.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from common.errors import Refusal
from common.jobs import utc_now
from common.model_metadata import VERSION_PATTERN, ModelMetadata, check_version_name, file_sha256
from common.settings import Settings
from common.storage import GCSStorage

ACTIVATION_CHANNEL = "ecosnap:models:activated"
STALE_STAGING_S = 3600
# Compare-and-set attempts before a change gives up (others kept changing the record).
CHANGE_ATTEMPTS = 20


class RegistryError(Refusal):
    """A registry operation refused: an unknown or existing version, a pointer move."""


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


class RegistryStore(Protocol):
    """Where a registry keeps its records and model files."""

    # Where uploads are assembled on this machine before ``add_version``.
    staging: Path

    def read(self, name: str) -> tuple[dict[str, Any] | None, Any]:
        """A JSON record and its token (None and the token of absence if missing)."""
        ...

    def replace(self, name: str, data: dict[str, Any], token: Any) -> bool:
        """Write ``data`` if the record's token is still ``token``; False if it changed."""
        ...

    def add_version(self, source: Path, metadata: ModelMetadata, status: dict[str, Any]) -> bool:
        """Add a whole version (model, metadata, status); False if it exists already."""
        ...

    def model_path(self, version: str, metadata: ModelMetadata) -> Path:
        """A path on this machine of ``version``'s model file, its metadata beside it."""
        ...

    def version_names(self) -> list[str]: ...

    def tidy(self) -> None:
        """Remove what a process killed mid-copy left behind."""
        ...


class FolderStore:
    """The registry in a folder every process on one host (or one volume) shares."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._versions = folder / "versions"
        self.staging = folder / ".staging"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self, name: str) -> tuple[dict[str, Any] | None, Any]:
        try:
            raw = (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None, None
        return json.loads(raw), raw

    def replace(self, name: str, data: dict[str, Any], token: Any) -> bool:
        path = self.folder / name
        with self._locked():
            if self.read(name)[1] != token:
                return False
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            partial.write_bytes(_json_bytes(data))
            partial.replace(path)
        return True

    def add_version(self, source: Path, metadata: ModelMetadata, status: dict[str, Any]) -> bool:
        self._versions.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(dir=self.staging))
        try:
            target = incoming / metadata.file
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)
            metadata.write_for(target)
            (incoming / "status.json").write_bytes(_json_bytes(status))
            try:
                os.rename(incoming, self._versions / metadata.version)
            except OSError:  # the version exists (ENOTEMPTY or EEXIST)
                return False
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return True

    def model_path(self, version: str, metadata: ModelMetadata) -> Path:
        return self._versions / version / metadata.file

    def version_names(self) -> list[str]:
        if not self._versions.is_dir():
            return []
        return [
            p.name
            for p in self._versions.iterdir()
            if VERSION_PATTERN.match(p.name) and (p / "status.json").is_file()
        ]

    def tidy(self) -> None:
        """Staging folders left by a process killed mid-copy; recent ones may be in use."""
        if not self.staging.is_dir():
            return
        for leftover in self.staging.iterdir():
            if time.time() - leftover.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(leftover, ignore_errors=True)


class BucketStore:
    """The registry in a bucket, for hosts that share nothing but the network.

    Records change under the bucket's generation preconditions; model files are
    created once (``if_generation_match=0``) and cached on each machine by sha256.
    Every call is bounded like ``GCSStorage``'s.
    """

    def __init__(self, storage: GCSStorage, prefix: str, cache_dir: Path, staging: Path) -> None:
        self._storage = storage
        self._prefix = prefix
        self._cache = cache_dir
        self.staging = staging

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A bucket call with the storage's timeout and bounded retry."""
        return self._storage.bounded(lambda: method(*args, **kwargs, **self._storage.bounds))

    def _list(self, prefix: str) -> list[Any]:
        listing = self._storage.bucket.list_blobs  # pages are fetched as it is read
        return self._storage.bounded(lambda: list(listing(prefix=prefix, **self._storage.bounds)))

    def read(self, name: str) -> tuple[dict[str, Any] | None, Any]:
        blob = self._call(self._storage.bucket.get_blob, self._prefix + name)
        if blob is None:
            return None, 0  # generation 0: "absent", to a precondition
        return json.loads(self._call(blob.download_as_bytes)), blob.generation

    def _create_or_replace(self, name: str, data: bytes, generation: int, kind: str) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        blob = self._storage.bucket.blob(self._prefix + name)
        try:
            self._call(blob.upload_from_string, data, content_type=kind,
                       if_generation_match=generation)  # fmt: skip
        except PreconditionFailed:
            return False
        return True

    def replace(self, name: str, data: dict[str, Any], token: Any) -> bool:
        return self._create_or_replace(name, _json_bytes(data), token, "application/json")

    def _holds(self, name: str, data: bytes) -> bool:
        """Whether the object ``name`` is ``data`` (by the MD5 the bucket keeps)."""
        blob = self._call(self._storage.bucket.get_blob, self._prefix + name)
        digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        return blob is not None and blob.md5_hash == digest

    def add_version(self, source: Path, metadata: ModelMetadata, status: dict[str, Any]) -> bool:
        folder = f"versions/{metadata.version}/"
        if self.read(folder + "status.json")[0] is not None:
            return False  # listed already; the preconditions below settle a race
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for path in files:
            inside = path.relative_to(source).as_posix() if source.is_dir() else ""
            name = folder + metadata.file + (f"/{inside}" if inside else "")
            data = path.read_bytes()
            # Already there: another process added this version (its files stand), or
            # an add that died left this very file (this one finishes it).
            created = self._create_or_replace(name, data, 0, "application/octet-stream")
            if not created and not self._holds(name, data):
                return False
        metadata_bytes = json.dumps(metadata.to_fields(), indent=2).encode()
        self._create_or_replace(folder + metadata.file + ".json", metadata_bytes, 0,
                                "application/json")  # fmt: skip
        # The status last: a version is listed once it is complete.
        return self._create_or_replace(folder + "status.json", _json_bytes(status), 0,
                                       "application/json")  # fmt: skip

    def model_path(self, version: str, metadata: ModelMetadata) -> Path:
        """Downloaded once per machine into ``<cache>/<sha256>/``, checked by sha256."""
        path = self._cache / metadata.sha256 / metadata.file
        if path.exists():
            return path
        partial = self._cache / f".{uuid.uuid4().hex}"
        partial.mkdir(parents=True)
        try:
            name = f"{self._prefix}versions/{version}/{metadata.file}"
            # The file, or a SavedModel's files under it ("model.h5.json" is neither).
            for blob in self._list(name):
                if blob.name == name:
                    target = partial / metadata.file
                elif blob.name.startswith(name + "/"):
                    target = partial / metadata.file / blob.name[len(name) + 1 :]
                else:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as output:
                    self._call(blob.download_to_file, output)
            if file_sha256(partial / metadata.file) != metadata.sha256:
                raise RegistryError(
                    "model_mismatch", f"Version {version!r}'s file in the bucket is not its sha256."
                )
            metadata.write_for(partial / metadata.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            for item in partial.iterdir():
                try:
                    os.replace(item, path.parent / item.name)
                except OSError:  # a SavedModel another process here put there first
                    if not (path.parent / item.name).exists():
                        raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return path

    def version_names(self) -> list[str]:
        folder = self._prefix + "versions/"
        names = {blob.name[len(folder) :].split("/")[0] for blob in self._list(folder)
                 if blob.name.endswith("/status.json")}  # fmt: skip
        return [name for name in names if VERSION_PATTERN.match(name)]

    def tidy(self) -> None:
        """Nothing in the bucket: an unfinished version has no status and is not listed."""


class ModelRegistry:
    """One named model's versions and active pointer, in a ``RegistryStore``."""

    @classmethod
    def in_folder(cls, root: Path, name: str) -> ModelRegistry:
        return cls(FolderStore(root / name), name)

    def __init__(self, store: RegistryStore, name: str) -> None:
        self.store = store
        self.name = name
        self.staging = store.staging
        # Metadata of a version never changes: read once per process.
        self._metadata: dict[str, ModelMetadata] = {}

    # -- reading ------------------------------------------------------------------
    def status(self, version: str) -> dict[str, Any]:
        check_version_name(version)
        status, _ = self.store.read(f"versions/{version}/status.json")
        if status is None:
            raise RegistryError("version_not_found", f"No model version {version!r}.")
        return status

    def metadata(self, version: str) -> ModelMetadata:
        if version not in self._metadata:
            file = self.status(version)["file"]
            fields, _ = self.store.read(f"versions/{version}/{file}.json")
            self._metadata[version] = ModelMetadata.from_fields(fields)
        return self._metadata[version]

    def model_path(self, version: str) -> Path:
        """The model file (or SavedModel directory) of ``version`` on this machine."""
        return self.store.model_path(version, self.metadata(version))

    def versions(self) -> list[str]:
        return sorted(self.store.version_names())

    def active(self) -> dict[str, Any]:
        """``{"version": ..., "history": [...]}``; version ``None`` before any activation."""
        return self.store.read("active.json")[0] or {"version": None, "history": []}

    def active_version(self) -> str | None:
        return self.active()["version"]

    def describe(self, version: str, active_version: str | None) -> dict[str, Any]:
        """What ``GET /models`` shows of one version."""
        status, metadata = self.status(version), self.metadata(version)
        return {
            "version": version,
            "active": version == active_version,
            **status,
            "description": metadata.description,
            "format": metadata.format,
            "sha256": metadata.sha256,
            "classes": list(metadata.classes),
            "input_size": list(metadata.input_size),
            "preprocessing": metadata.preprocessing.to_fields(),
            "outputs": metadata.outputs,
            "extra": metadata.extra,
        }

    # -- writing ------------------------------------------------------------------
    def _change(self, name: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]):
        """Apply ``change`` to a record until nobody else changed it meanwhile; returns
        the record as it was before the change that stuck."""
        for _ in range(CHANGE_ATTEMPTS):
            current, token = self.store.read(name)
            if self.store.replace(name, change(current), token):
                return current
        raise RegistryError("registry_busy", f"{name} kept changing; try again.")

    def add(self, source: Path, metadata: ModelMetadata, state: str, **details: Any) -> None:
        """Add ``source`` (a file or a SavedModel directory) as ``metadata.version``.

        The version appears complete, or not at all; an existing one is never replaced.
        """
        check_version_name(metadata.version)
        status = {"state": state, "file": metadata.file, "added_at": utc_now(), **details}
        if not self.store.add_version(source, metadata, status):
            raise RegistryError("version_exists", f"Version {metadata.version!r} already exists.")

    def set_status(self, version: str, state: str, **details: Any) -> None:
        """Replace the outcome of a validation; what the version was added with stays."""
        self.status(version)

        def changed(current: dict[str, Any] | None) -> dict[str, Any]:
            kept = {k: v for k, v in (current or {}).items() if k not in ("error", "checks")}
            return {**kept, "state": state, **details}

        self._change(f"versions/{version}/status.json", changed)

    def activate(self, version: str) -> str | None:
        """Make ``version`` (validated) the active one; returns the previous version."""
        state = self.status(version)
        if state["state"] != "valid":
            raise RegistryError(
                f"model_{state['state']}",
                f"Version {version!r} is {state['state']}; only a valid model can be activated."
                + (f" {state['error']['message']}" if "error" in state else ""),
            )

        def moved(current: dict[str, Any] | None) -> dict[str, Any]:
            entry = {"version": version, "activated_at": utc_now()}
            return {"version": version, "history": [*(current or {}).get("history", []), entry]}

        before = self._change("active.json", moved)
        return (before or {}).get("version")

    def previous_version(self) -> str:
        """The version that was active before the current one, for a rollback."""
        history = [entry["version"] for entry in self.active()["history"]]
        current = history[-1] if history else None
        earlier = [version for version in history if version != current]
        if not earlier:
            raise RegistryError("no_previous_version", "No earlier version to roll back to.")
        return earlier[-1]

    def import_configured(self, model_path: Path) -> str | None:
        """Make sure the configured model (``MODEL_PATH``) is in the registry and served.

        A model file the registry has not seen (by sha256) is added and activated,
        so pointing ``MODEL_PATH`` at a new file and restarting serves it; a file
        already there changes nothing, so an activation made through the API
        survives restarts. An active pointer to a version that is gone or not valid
        falls back to the configured model. Several processes may do this at once
        (an API and its workers starting): adding and moving the pointer are
        compare-and-set, so they agree. Returns the active version.
        """
        metadata = ModelMetadata.for_model(model_path)
        sha256 = file_sha256(model_path)
        self.store.tidy()
        known = {self.metadata(v).sha256: v for v in self.versions()}
        if sha256 not in known:
            version = metadata.version[:55]
            if version in known.values():
                version = f"{version}+{sha256[:8]}"
            try:
                self.add(model_path, replace(metadata, version=version, sha256=sha256), "valid",
                         origin=f"MODEL_PATH ({model_path.name})")  # fmt: skip
                self.activate(version)
            except RegistryError as exc:
                if exc.code != "version_exists":
                    raise
                # Another process added it just now and may not have activated it yet.
                known[sha256] = version
        if not self._active_is_servable():
            self.activate(known[sha256])
        return self.active_version()

    def _active_is_servable(self) -> bool:
        version = self.active_version()
        try:
            return version is not None and self.status(version)["state"] == "valid"
        except RegistryError:
            return False


def registry_from_settings(settings: Settings, storage: object | None = None) -> ModelRegistry:
    """The bucket's registry with ``GCS_BUCKET`` set (``storage`` is its
    ``GCSStorage``), else the folder's."""
    if isinstance(storage, GCSStorage):
        store: RegistryStore = BucketStore(
            storage, f"registry/{settings.model_name}/", settings.var_dir / "registry-cache",
            settings.var_dir / "registry-staging",
        )  # fmt: skip
        return ModelRegistry(store, settings.model_name)
    return ModelRegistry.in_folder(settings.registry_dir, settings.model_name)
