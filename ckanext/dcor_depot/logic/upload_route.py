"""The direct-to-S3 upload route: URLs for one new object, then its registration.

A client asks ``dcor_depot_upload_urls`` for a new resource id and URLs that
write exactly that resource's object in the circle bucket, uploads the file
straight to S3, and registers it with ``resource_create`` (``url_type``
``s3_upload``, ``id`` the issued one). The plugin checks the object before
CKAN creates the resource (:func:`check_registration`); then jobs hash the
object, record its DC metadata, apply its visibility and back it up.
"""

from __future__ import annotations

import urllib.parse
import uuid
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk

from .. import config, placement, records
from ..dc_file import mimetype_for
from ..storage.s3 import S3Error

#: Object metadata given at issue: the dataset the upload is for, and its size.
DATASET_METADATA = "dcor-dataset-id"
SIZE_METADATA = "dcor-size"


def issue_upload_urls(package_id: str, name: str, size: int, md5: str | None) -> dict[str, Any]:
    """A new resource id and the URLs to upload its file (see ``dcor_depot_upload_urls``)."""
    store = config.object_store()
    if store is None:
        raise tk.ValidationError(
            {"package_id": ["This site has no object store: upload the file with resource_create"]}
        )
    package = model.Package.get(package_id)
    if package.state == "deleted":
        raise tk.ValidationError({"package_id": [f"Dataset {package.name} is deleted"]})
    if not package.owner_org:
        raise tk.ValidationError(
            {"package_id": [f"Dataset {package.name} has no circle (organization): add it to one"]}
        )
    resource_id = str(uuid.uuid4())
    try:
        upload = store.presigned_upload(
            *placement.object_location(store, package.owner_org, resource_id),
            size,
            config.upload_url_expiry(),
            metadata={DATASET_METADATA: package.id, SIZE_METADATA: str(size)},
            md5=md5,
        )
    except S3Error as exc:
        raise tk.ValidationError({"upload": [str(exc)]}) from exc
    answer: dict[str, Any] = {
        "resource_id": resource_id,
        "size": size,
        "expires": upload.expires_at.isoformat(timespec="seconds"),
    }
    if upload.upload_id is None:
        answer["upload"] = {
            "method": "PUT",
            "url": upload.url,
            "headers": upload.headers,
            "howto": "PUT the whole file to url with these headers.",
        }
    else:
        answer["upload"] = {
            "method": "multipart",
            "upload_id": upload.upload_id,
            "part_size": upload.part_size,
            "parts": [
                {"part_number": number, "url": url}
                for number, url in enumerate(upload.part_urls, start=1)
            ],
            "complete": {"method": "POST", "url": upload.complete_url},
            "abort": {"method": "DELETE", "url": upload.abort_url},
            "howto": (
                "PUT bytes [(N-1)*part_size, N*part_size) of the file to the url of part N "
                "and keep the ETag header of each answer; then POST to complete.url the body "
                "<CompleteMultipartUpload><Part><PartNumber>N</PartNumber><ETag>ETag of part "
                "N</ETag></Part>...</CompleteMultipartUpload> with every part in order."
            ),
        }
    answer["register"] = {
        "action": "resource_create",
        "data": {
            "id": resource_id,
            "package_id": package.id,
            "name": name,
            "url_type": records.S3_URL_TYPE,
            "size": size,
        },
    }
    return answer


def check_registration(resource: dict[str, Any]) -> None:
    """Refuse to register an upload whose object is missing or not the file issued.

    Called before CKAN creates a resource with ``url_type`` ``s3_upload``;
    sets the resource's ``size``, ``mimetype`` and ``url`` (CKAN's download
    URL) when it passes.
    """
    store = config.object_store()
    if store is None:
        raise tk.ValidationError(
            {"url_type": ["This site has no object store: s3_upload resources are off"]}
        )
    resource_id = resource.get("id") or ""
    package = model.Package.get(resource.get("package_id"))
    if not resource_id:
        raise tk.ValidationError(
            {"id": ["Give the resource id that dcor_depot_upload_urls returned for the file"]}
        )
    if model.Resource.get(resource_id) is not None:
        raise tk.ValidationError({"id": [f"Resource {resource_id} is already registered"]})
    if package is None or not package.owner_org:
        raise tk.ValidationError({"package_id": ["The dataset has no circle (organization)"]})
    try:
        location = placement.object_location(store, package.owner_org, resource_id)
    except ValueError as exc:
        raise tk.ValidationError({"id": [str(exc)]}) from exc
    try:
        info = store.object_info(*location)
    except S3Error as exc:
        raise tk.ValidationError({"id": [str(exc)]}) from exc
    if info is None:
        raise tk.ValidationError(
            {
                "id": [
                    f"No file was uploaded for resource {resource_id} ({location} "
                    "does not exist): send it with the URLs of dcor_depot_upload_urls (a "
                    "multipart upload must also be completed), then register it"
                ]
            }
        )
    if info.metadata.get(DATASET_METADATA) != package.id:
        raise tk.ValidationError(
            {"id": [f"The upload of resource {resource_id} was issued for another dataset"]}
        )
    issued = int(info.metadata.get(SIZE_METADATA, -1))
    if info.size != issued:
        raise tk.ValidationError(
            {
                "size": [
                    f"The uploaded object has {info.size} bytes, the upload was issued for "
                    f"{issued}: parts are missing; upload the file again with new URLs"
                ]
            }
        )
    given = resource.get("size")
    if given not in (None, "") and str(given) != str(info.size):
        raise tk.ValidationError(
            {
                "size": [
                    f"size is {given}, but the uploaded file of resource {resource_id} has "
                    f"{info.size} bytes"
                ]
            }
        )
    resource["size"] = info.size
    # the download URL (views.py): it checks permission, then redirects to S3
    name = urllib.parse.quote(resource.get("name") or resource_id)
    site_url = tk.config["ckan.site_url"].rstrip("/")
    resource["url"] = f"{site_url}/dataset/{package.id}/resource/{resource_id}/download/{name}"
    if not resource.get("mimetype"):
        resource["mimetype"] = mimetype_for(resource.get("name") or "")
