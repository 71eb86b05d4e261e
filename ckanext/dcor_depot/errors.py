"""The extension's errors: what a job, command or hook cannot do, and what to say of it."""

from __future__ import annotations

import logging

import ckan.model as model

from .storage.s3 import S3Error

log = logging.getLogger(__name__)


class JobError(Exception):
    """A job cannot do its work; the message says why and what to do."""


def failure_text(exc: Exception) -> str:
    """What to say of one item that failed: the message of a JobError or S3Error (they
    say what to do), or the type and message of anything else, whose traceback goes to
    the log."""
    if isinstance(exc, (JobError, S3Error)):
        return str(exc)
    log.exception("dcor_depot: one item failed, the others go on")
    return f"{type(exc).__name__}: {exc}"


def one_item_failed(exc: Exception) -> str:
    """:func:`failure_text`, for a site-wide command that goes on with the next item: the
    session is rolled back, so that the next item starts clean."""
    model.Session.rollback()
    return failure_text(exc)


class NoCircle(JobError):
    """A dataset without a circle (organization) has no bucket: none of its files goes to
    S3. The one message for it, raised by ``placement.require_circle``."""

    def __init__(self, dataset_name: str):
        super().__init__(
            f"Dataset {dataset_name} has no circle (organization), so no bucket: add it to "
            "a circle, then run `ckan run-jobs-dcor-depot`"
        )
