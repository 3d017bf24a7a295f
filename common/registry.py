"""The model registry: versions of one named model in a folder, and which one is active.

Layout under ``<MODEL_REGISTRY>/<MODEL_NAME>/``::

    active.json                 {"version": ..., "history": [{"version", "activated_at"}]}
    versions/<version>/<file>   the model file (or SavedModel directory)
    versions/<version>/<file>.json   its metadata (``common.model_metadata``)
    versions/<version>/status.json   {"state": "validating" | "valid" | "invalid", ...}

The folder is the source of truth and is shared by the API and every worker (a
volume in docker-compose). The API writes uploads and the active pointer; workers
write validation outcomes. Redis only carries a notice that the pointer moved
(``ACTIVATION_CHANNEL``), so a worker that missed it still finds the pointer on its
next periodic look. Every file is replaced atomically (write, then rename), and
changes to ``active.json`` happen under an exclusive lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.errors import Refusal
from common.jobs import utc_now
from common.model_metadata import VERSION_PATTERN, ModelMetadata, check_version_name, file_sha256

ACTIVATION_CHANNEL = "ecosnap:models:activated"
STALE_STAGING_S = 3600


class RegistryError(Refusal):
    """A registry operation refused: an unknown or existing version, a pointer move."""


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    partial.replace(path)


class ModelRegistry:
    def __init__(self, root: Path, name: str) -> None:
        self.folder = root / name
        self.name = name
        self._versions = self.folder / "versions"
        # Uploads and copies are assembled here, then renamed into ``versions/``.
        self.staging = self.folder / ".staging"

    # -- reading ------------------------------------------------------------------
    def version_dir(self, version: str) -> Path:
        check_version_name(version)
        folder = self._versions / version
        if not folder.is_dir():
            raise RegistryError("version_not_found", f"No model version {version!r}.")
        return folder

    def model_path(self, version: str) -> Path:
        """The model file (or SavedModel directory) of ``version``."""
        folder = self.version_dir(version)
        return folder / self._read(folder / "status.json")["file"]

    def metadata(self, version: str) -> ModelMetadata:
        return ModelMetadata.for_model(self.model_path(version))

    def status(self, version: str) -> dict[str, Any]:
        return self._read(self.version_dir(version) / "status.json")

    def versions(self) -> list[str]:
        if not self._versions.is_dir():
            return []
        return sorted(
            p.name
            for p in self._versions.iterdir()
            if VERSION_PATTERN.match(p.name) and (p / "status.json").is_file()
        )

    def active(self) -> dict[str, Any]:
        """``{"version": ..., "history": [...]}``; version ``None`` before any activation."""
        path = self.folder / "active.json"
        return self._read(path) if path.is_file() else {"version": None, "history": []}

    def active_version(self) -> str | None:
        return self.active()["version"]

    def describe(self, version: str, active_version: str | None) -> dict[str, Any]:
        """What ``GET /models`` shows of one version."""
        folder = self.version_dir(version)
        status = self._read(folder / "status.json")
        metadata = ModelMetadata.for_model(folder / status["file"])
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

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text())

    # -- writing ------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, source: Path, metadata: ModelMetadata, state: str, **details: Any) -> Path:
        """Copy ``source`` (a file or a SavedModel directory) in as ``metadata.version``.

        The version folder appears in one rename, complete, or not at all; an
        existing version is never replaced.
        """
        check_version_name(metadata.version)
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
            _write_json(
                incoming / "status.json",
                {"state": state, "file": metadata.file, "added_at": utc_now(), **details},
            )
            try:
                os.rename(incoming, self._versions / metadata.version)
            except OSError as exc:  # the version exists (ENOTEMPTY or EEXIST)
                raise RegistryError(
                    "version_exists", f"Version {metadata.version!r} already exists."
                ) from exc
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return self._versions / metadata.version / metadata.file

    def set_status(self, version: str, state: str, **details: Any) -> None:
        """Replace the outcome of a validation; what the version was added with stays."""
        folder = self.version_dir(version)
        with self._locked():
            current = self._read(folder / "status.json")
            kept = {k: v for k, v in current.items() if k not in ("error", "checks")}
            _write_json(folder / "status.json", {**kept, "state": state, **details})

    def activate(self, version: str) -> str | None:
        """Make ``version`` (validated) the active one; returns the previous version."""
        with self._locked():
            return self._activate(version)

    def _activate(self, version: str) -> str | None:
        state = self.status(version)
        if state["state"] != "valid":
            raise RegistryError(
                f"model_{state['state']}",
                f"Version {version!r} is {state['state']}; only a valid model can be activated."
                + (f" {state['error']['message']}" if "error" in state else ""),
            )
        active = self.active()
        history = [*active["history"], {"version": version, "activated_at": utc_now()}]
        _write_json(self.folder / "active.json", {"version": version, "history": history})
        return active["version"]

    def previous_version(self) -> str:
        """The version that was active before the current one, for a rollback."""
        history = [entry["version"] for entry in self.active()["history"]]
        current = history[-1] if history else None
        earlier = [version for version in history if version != current]
        if not earlier:
            raise RegistryError("no_previous_version", "No earlier version to roll back to.")
        return earlier[-1]

    def import_configured(self, model_path: Path) -> str:
        """Make sure the configured model (``MODEL_PATH``) is in the registry and served.

        A model file the registry has not seen (by sha256) is added and activated,
        so pointing ``MODEL_PATH`` at a new file and restarting serves it; a file
        already there changes nothing, so an activation made through the API
        survives restarts. An active pointer to a version that is gone or not valid
        falls back to the configured model. Returns the active version.
        """
        metadata = ModelMetadata.for_model(model_path)
        sha256 = file_sha256(model_path)
        with self._locked():
            self._remove_stale_staging()
            known = {self.metadata(v).sha256: v for v in self.versions()}
            if sha256 not in known:
                version = metadata.version[:55]
                if version in known.values():
                    version = f"{version}+{sha256[:8]}"
                self.add(
                    model_path,
                    replace(metadata, version=version, sha256=sha256),
                    "valid",
                    origin=f"MODEL_PATH ({model_path.name})",
                )
                self._activate(version)
            elif not self._active_is_servable():
                self._activate(known[sha256])
            return self.active_version()

    def _active_is_servable(self) -> bool:
        version = self.active_version()
        try:
            return version is not None and self.status(version)["state"] == "valid"
        except RegistryError:
            return False

    def _remove_stale_staging(self) -> None:
        """Staging folders left by a process killed mid-copy; recent ones may be in use."""
        if not self.staging.is_dir():
            return
        for leftover in self.staging.iterdir():
            if time.time() - leftover.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(leftover, ignore_errors=True)
