"""The direct-to-S3 upload route: URLs for one new object, then its registration.

A client asks ``dcor_depot_upload_urls`` for a new resource id and URLs that
write exactly one new object in the upload staging area (signed by the upload
identity, which can do nothing else: ``storage/s3/staging.py``), uploads the
file straight to S3, and registers it with ``resource_create`` (``url_type``
``s3_upload``, ``id`` the issued one). The registration, on every path that
writes resources (``rules.py``), checks the staged object against its grant and
copies it into the circle bucket (:func:`register`); then jobs hash the object,
record its DC metadata, apply its visibility and back it up. Grants issued
before the staging area (their URLs wrote the circle bucket itself, signed by
the extension's own identity) can be neither resumed nor registered.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import urllib.parse
import uuid
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk

from .. import config, errors, placement, resource_fields
from ..dc_file import mimetype_for
from ..model import ckan_rows, grants
from ..storage.s3 import (
    NoUploadIdentity,
    ObjectStore,
    PresignedUpload,
    S3Error,
    StagedObjectUnreadable,
    UploadGoneError,
    content_disposition,
)

log = logging.getLogger(__name__)

GiB = 1024**3


def issue_upload_urls(
    package_id: str, name: str, size: int, md5: str | None, user_id: str | None
) -> dict[str, Any]:
    """A new resource id and the URLs to upload its file (see ``dcor_depot_upload_urls``)."""
    store, package = _store_and_dataset(package_id)
    resource_id, upload = _grant(store, package.owner_org, package, name, size, md5, user_id)
    return _answer(resource_id, package, name, upload)


def issue_circle_upload_urls(
    owner_org: str, size: int, user_id: str | None, part_size: int
) -> tuple[str, PresignedUpload]:
    """A new resource id and bare URLs (``Content-Length`` only) for a file of ``size``
    bytes in parts of ``part_size`` (one PUT when the file fits in one), granted to a
    circle rather than a dataset: DCOR-Aid's ``resource_upload_s3_urls``. The grant is
    bound to the dataset it is registered in (by the same user, in that circle)."""
    store = _store("organization_id")
    return _grant(store, owner_org, None, "", size, None, user_id, part_size)


def _grant(
    store: ObjectStore,
    owner_org: str,
    package: model.Package | None,
    name: str,
    size: int,
    md5: str | None,
    user_id: str | None,
    part_size: int | None = None,
) -> tuple[str, PresignedUpload]:
    """Check the limits, record a grant and sign its URLs (outside the circle's lock)."""
    largest = config.upload_max_size()
    if size > largest:
        raise tk.ValidationError(
            {
                "size": [
                    f"The file has {size} bytes; this site grants uploads of at most "
                    f"{largest} bytes ({_gib(largest)}, ckanext.dcor_depot.upload_max_gib)"
                ]
            }
        )
    grants.lock_circle(owner_org)  # until the grant is committed: quota
    _check_circle_quota(owner_org, size, "size", f"a file of {size} bytes")
    _check_pending(user_id)
    resource_id = str(uuid.uuid4())
    key = placement.staged_key(resource_id)
    expiry = config.upload_url_expiry()
    try:
        part_size, upload_id = store.start_upload(key, size, part_size)
    except S3Error as exc:
        model.Session.rollback()
        raise store_failed("upload", exc) from exc
    now = grants.utcnow()
    grant = grants.Grant(
        resource_id=resource_id,
        package_id=package.id if package is not None else None,
        owner_org=owner_org,
        user_id=user_id,
        bucket=store.settings.staging_bucket,
        key=key,
        name=name,
        size=size,
        part_size=part_size,
        md5=md5,
        upload_id=upload_id,
        issued=now,
        expires=now + datetime.timedelta(seconds=expiry),
        state=grants.PENDING,
    )
    grants.add(grant)
    model.Session.commit()  # the circle is free again: signing 10,000 part URLs takes seconds
    try:  # a circle's grant: bare URLs, for a client that sends only Content-Length
        upload = store.sign_upload(
            key, size, part_size, upload_id, expiry, md5, write_once=package is not None
        )
    except S3Error as exc:
        raise store_failed("upload", exc) from exc  # the grant can be resumed
    return resource_id, upload


def resume_upload_urls(package_id: str, resource_id: str) -> dict[str, Any]:
    """Which parts of a pending upload the store holds, and fresh URLs for the others;
    they expire with the grant (resuming never extends it)."""
    store, package = _store_and_dataset(package_id)
    grant = grants.get(resource_id, lock=True)
    if grant is None or grant.package_id != package.id:
        model.Session.rollback()
        raise tk.ValidationError(
            {
                "resource_id": [
                    f"No upload of resource {resource_id} is pending for dataset "
                    f"{package.name} (registered, pruned after expiry, or never granted): "
                    "ask for a new upload without resource_id"
                ]
            }
        )
    refuse_ended(grant)
    left = int((grant.expires - grants.utcnow()).total_seconds())
    refuse_unstaged(store, grant)
    try:
        if _staged(store, grant):
            upload = _done(grant)
        elif grant.upload_id is None:
            upload = store.presigned_put(grant.key, grant.size, left, grant.md5)
        else:
            upload = store.presigned_parts(
                grant.key, grant.size, grant.part_size, grant.upload_id, left
            )
    except UploadGoneError:
        try:
            completed = _staged(store, grant)  # completed meanwhile
        except S3Error as exc:
            model.Session.rollback()
            raise store_failed("upload", exc) from exc
        if completed:
            model.Session.rollback()
            return resume_upload_urls(package_id, resource_id)
        grants.update(resource_id, state=grants.ABORTED)
        model.Session.commit()
        refuse_ended(dataclasses.replace(grant, state=grants.ABORTED))
        raise  # not reached
    except S3Error as exc:
        model.Session.rollback()
        raise store_failed("upload", exc) from exc
    model.Session.rollback()
    return _answer(resource_id, package, grant.name, upload)


def _staged(store: ObjectStore, grant: grants.Grant) -> bool:
    """Whether the staging area holds the grant's whole file. One the store cannot read
    is removed (:meth:`~ObjectStore.staged_info`): the upload can be sent again."""
    try:
        return store.staged_info(grant.key) is not None
    except StagedObjectUnreadable:
        log.info("Removed the unreadable staged upload of resource %s", grant.resource_id)
        return False


def refuse_unstaged(store: ObjectStore, grant: grants.Grant, field: str = "resource_id") -> None:
    """Refuse a grant whose URLs wrote the circle bucket itself (issued before the staging
    area): they were signed by the extension's own identity, and what they wrote may be a
    copy of anything it can read (``x-amz-copy-source``), with any metadata."""
    if grant.bucket == store.settings.staging_bucket:
        return
    model.Session.rollback()
    raise tk.ValidationError(
        {
            field: [
                f"The upload of resource {grant.resource_id} was granted before this site "
                "checked uploads in a staging area and can be neither resumed nor "
                "registered: ask dcor_depot_upload_urls for a new upload and send the file "
                "again"
            ]
        }
    )


def _done(grant: grants.Grant) -> PresignedUpload:
    """What a resumed upload answers when the store holds the whole file."""
    return PresignedUpload(
        grant.bucket, grant.key, grant.size, grant.expires, grant.part_size, complete=True
    )


def store_failed(field: str, exc: S3Error) -> tk.ValidationError:
    """The answer to a user when the store failed: what the operator must fix goes to the log.

    The store's messages name its (internal) address, the options to check, its buckets:
    not for users.
    """
    if isinstance(exc, NoUploadIdentity):
        log.error("dcor_depot upload route: %s", exc)
        return tk.ValidationError(
            {
                field: [
                    "This site does not take uploads straight to its object store yet: its "
                    "operator has to configure an upload identity (README, 'Uploading large "
                    "files straight to S3'). Upload the file with resource_create instead"
                ]
            }
        )
    # whatever else went wrong with the store (unreachable, refused credentials, a
    # connection dropped, an answer it should not give) is for the operator
    log.error("dcor_depot upload route: %s", exc)
    return tk.ValidationError(
        {field: ["The object store cannot be used right now; try again later"]}
    )


def served_headers(name: str) -> dict[str, str]:
    """How the object of a file is served: under its name, with its type."""
    return {"ContentType": mimetype_for(name), "ContentDisposition": content_disposition(name)}


def _store(field: str) -> ObjectStore:
    store = config.object_store()
    if store is None:
        raise tk.ValidationError(
            {field: ["This site has no object store: upload the file with resource_create"]}
        )
    return store


def require_circle(package: model.Package) -> None:
    try:
        placement.require_circle(package.name, package.owner_org)
    except errors.NoCircle as exc:
        raise tk.ValidationError({"package_id": [str(exc)]}) from None


def _store_and_dataset(package_id: str) -> tuple[ObjectStore, model.Package]:
    store = _store("package_id")
    package = model.Package.get(package_id)
    if package.state == "deleted":
        raise tk.ValidationError({"package_id": [f"Dataset {package.name} is deleted"]})
    require_circle(package)
    return store, package


def check_quota(
    package: model.Package, size: int, field: str = "size", resource_id: str | None = None
) -> None:
    """Refuse a file of ``size`` bytes that would take the dataset's circle over its quota
    (``ckanext.dcor_depot.circle_quota_gib``), saying its usage and limit (``resource_id``:
    of the resource being created, not counted in the usage). The caller has
    locked the circle (:func:`grants.lock_circle`) until its transaction ends; on a
    refusal the transaction is rolled back."""
    _check_circle_quota(package.owner_org, size, field, f"a file of {size} bytes", resource_id)


def check_move_quota(package_id: str, owner_org: str | None) -> None:
    """Before a dataset's circle changes to ``owner_org`` (``package_owner_org_update``,
    which ``package_update`` calls too): refuse the move when the dataset's files and
    pending uploads do not fit the new circle's quota, and let its pending uploads count
    against it. A new dataset, or one that stays, passes."""
    exists, committed = ckan_rows.committed_circle(package_id)
    if not exists or not owner_org or committed == owner_org:
        return
    grants.lock_circle(owner_org)
    files, pending = grants.dataset_usage(package_id)
    package = model.Package.get(package_id)
    name = package.name if package is not None else package_id
    what = f"dataset {name} with {files + pending} bytes ({files} in files, {pending} pending)"
    _check_circle_quota(owner_org, files + pending, "owner_org", what, excluding_package=package_id)
    grants.move_pending(package_id, owner_org)


def _check_circle_quota(
    owner_org: str,
    size: int,
    field: str,
    what: str,
    resource_id: str | None = None,
    excluding_package: str | None = None,
) -> None:
    quota = config.circle_quota()
    if quota is None:
        return
    store = config.object_store()
    bucket = placement.circle_bucket(store, owner_org) if store is not None else None
    recorded, pending = grants.circle_usage(owner_org, bucket, resource_id, excluding_package)
    if recorded + pending + size > quota:
        model.Session.rollback()
        circle = model.Group.get(owner_org)
        raise tk.ValidationError(
            {
                field: [
                    f"Circle {circle.name if circle else owner_org} uses "
                    f"{recorded + pending} bytes ({recorded} in files, {pending} in pending "
                    f"uploads) of its limit of {quota} bytes ({_gib(quota)}, "
                    f"ckanext.dcor_depot.circle_quota_gib): {what} does not fit. Files of "
                    "deleted resources count until they are removed. Ask the site's "
                    "administrators for more space"
                ]
            }
        )


def _check_pending(user_id: str | None) -> None:
    """Refuse a grant to a user who has as many pending uploads as one may have."""
    most = config.upload_max_pending()
    if user_id is None or grants.pending_of(user_id) < most:
        return
    model.Session.rollback()
    raise tk.ValidationError(
        {
            "size": [
                f"You have {most} uploads granted and not registered yet, as many as one may "
                "have (ckanext.dcor_depot.upload_max_pending): register them, or let them "
                "expire, before you ask for more"
            ]
        }
    )


def refuse_ended(grant: grants.Grant, field: str = "resource_id", rollback: bool = True) -> None:
    """Refuse an expired, aborted or registered grant, saying what to do."""
    if grant.state == grants.REGISTERED:
        if rollback:
            model.Session.rollback()
        raise tk.ValidationError(
            {field: [f"The upload of resource {grant.resource_id} is registered already"]}
        )
    if grant.state == grants.ABORTED:
        problem = "was aborted (the store no longer holds its parts)"
    elif grant.expired():
        problem = (
            f"expired at {grant.expires:%Y-%m-%d %H:%M:%S} UTC "
            "(ckanext.dcor_depot.upload_url_expiry)"
        )
    else:
        return
    if rollback:
        model.Session.rollback()
    raise tk.ValidationError(
        {
            field: [
                f"The upload of resource {grant.resource_id} {problem}: ask "
                "dcor_depot_upload_urls for a new upload and send the file again"
            ]
        }
    )


def _gib(size: int) -> str:
    return f"{size / GiB:.3g} GiB"


def _answer(
    resource_id: str, package: model.Package, name: str, upload: PresignedUpload
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "resource_id": resource_id,
        "size": upload.size,
        "expires": upload.expires_at.isoformat(timespec="seconds"),
    }
    if upload.complete:
        answer["upload"] = {
            "method": "done",
            "howto": "The store holds the whole file: register it.",
        }
    elif upload.upload_id is None:
        answer["upload"] = {
            "method": "PUT",
            "url": upload.url,
            "headers": upload.headers,
            "howto": "PUT the whole file to url with exactly these headers.",
        }
    else:
        answer["upload"] = {
            "method": "multipart",
            "upload_id": upload.upload_id,
            "part_size": upload.part_size,
            "parts": [{"part_number": number, "url": url} for number, url in upload.part_urls],
            "parts_done": [
                {"part_number": number, "etag": etag, "size": size}
                for number, etag, size in upload.parts_done
            ],
            "complete": {"method": "POST", "url": upload.complete_url},
            "abort": {"method": "DELETE", "url": upload.abort_url},
            "howto": (
                "PUT bytes [(N-1)*part_size, N*part_size) of the file to the url of part N "
                "(parts in any order, also in parallel) and keep the ETag header of each "
                "answer; then POST to complete.url the body <CompleteMultipartUpload><Part>"
                "<PartNumber>N</PartNumber><ETag>ETag of part N</ETag></Part>..."
                "</CompleteMultipartUpload> with every part in order, those of parts_done "
                "included."
            ),
        }
    answer["register"] = {
        "action": "resource_create",
        "data": {
            "id": resource_id,
            "package_id": package.id,
            "name": name,
            "url_type": resource_fields.S3_URL_TYPE,
            "size": upload.size,
        },
    }
    return answer


def download_url(package_id: str, resource_id: str, name: str | None) -> str:
    """CKAN's download URL of a file in S3 (views.py checks permission, then redirects)."""
    quoted = urllib.parse.quote(name or resource_id)
    site_url = tk.config["ckan.site_url"].rstrip("/")
    return f"{site_url}/dataset/{package_id}/resource/{resource_id}/download/{quoted}"
