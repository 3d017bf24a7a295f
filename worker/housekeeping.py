"""Keeping disks in bounds: stored uploads and downloaded copies expire.

Without this every photo ever posted stays in the upload folder, and every dataset
a worker downloaded from the bucket stays in its cache, until the disk fills.
"""

from __future__ import annotations

import logging
import threading

from common.periodic import run_every
from common.settings import Settings
from common.storage import Storage

log = logging.getLogger(__name__)


def start_upload_sweeper(storage: Storage, settings: Settings) -> threading.Event:
    """Prune ``storage`` every ``settings.sweep_interval_s``; set the event to stop."""

    def sweep() -> None:
        removed = storage.prune(settings.upload_retention_s)
        if removed:
            log.info(
                "Removed %d stored files unused for %d s.", removed, settings.upload_retention_s
            )

    return run_every(settings.sweep_interval_s, sweep, "ecosnap-upload-sweeper")
