"""Job (queue dcor-short): make a dataset's objects as visible as the dataset."""

from __future__ import annotations

import logging

from .. import config, placement

log = logging.getLogger(__name__)


def apply_visibility(package_id: str) -> str:
    """Tag the objects of every resource (deleted ones too) public or private.

    Public only while the dataset is public and active and the resource is
    active; reads the state when it runs, so one run after the last change
    is enough.
    """
    store = config.object_store()
    if store is None:
        return "S3 is off (dcor_object_store.endpoint_url is not set)"
    aligned = placement.align_visibility(store, package_id)
    if aligned is None:
        return f"dataset {package_id}: no dataset or no circle, no objects"
    state = "public" if aligned.public else "private"
    message = (
        f"dataset {aligned.name} is {state}: {aligned.changed} changed, "
        f"{aligned.unchanged} were right"
    )
    log.info(message)
    return message
