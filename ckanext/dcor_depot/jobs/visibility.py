"""Job (queue dcor-short): make a dataset's objects as visible as the dataset."""

from __future__ import annotations

import logging
from typing import NamedTuple

import ckan.model as model

from .. import config, placement
from ..storage.s3 import ARTIFACTS, ObjectStore, object_key

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
    aligned = align_objects(store, package_id)
    if aligned is None:
        return f"dataset {package_id}: no dataset or no circle, no objects"
    state = "public" if aligned.public else "private"
    message = (
        f"dataset {aligned.name} is {state}: {aligned.changed} changed, "
        f"{aligned.unchanged} were right"
    )
    log.info(message)
    return message


class Aligned(NamedTuple):
    name: str
    public: bool
    changed: int
    unchanged: int


def align_objects(store: ObjectStore, package_id: str) -> Aligned | None:
    """The work of :func:`apply_visibility`; None when there is no dataset or circle."""
    model.Session.expire_all()
    package = model.Package.get(package_id)
    if package is None or not package.owner_org:
        return None
    bucket = store.circle_bucket(package.owner_org)
    dataset_public = placement.visible_to_all(package.private, package.state)
    resources = model.Session.query(model.Resource).filter_by(package_id=package.id)
    changed = unchanged = 0
    for resource in resources:
        public = placement.row_is_public(package, resource)
        for artifact in ARTIFACTS:
            key = object_key(artifact, resource.id)
            current = store.visibility(bucket, key)
            if current is None:
                continue
            if current == public:
                unchanged += 1
            else:
                store.set_public(bucket, key, public)
                changed += 1
    return Aligned(package.name, dataset_public, changed, unchanged)
