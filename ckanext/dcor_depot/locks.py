"""Locks that keep two workers, or a worker and a command, from uploading one file at once."""

from __future__ import annotations

from . import config
from .storage.depot import exclusive_lock


def upload_lock(resource_id: str):
    """The lock that serializes the uploads of one resource's objects (jobs and commands)."""
    return exclusive_lock(config.lock_dir() / f"{resource_id}.upload.lock")
