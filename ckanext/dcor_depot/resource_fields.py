"""The vocabulary of the fields the extension records: on resources (what only its jobs
write), in the metadata of objects, and the ``url_type`` values of files it keeps."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from .storage.s3 import MD5_METADATA_KEY, content_disposition

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

#: Context key set by the depot's jobs: the plugin's hooks ignore such updates.
JOB_CONTEXT_KEY = "dcor_depot_job"
#: The ``url_type`` of a resource whose file went straight to S3 (never to CKAN's storage).
S3_URL_TYPE = "s3_upload"
#: Resource field saying why the file uploaded straight to S3 was refused.
S3_UPLOAD_ERROR_FIELD = "s3_upload_error"
#: Resource fields only the depot's jobs write; a user's create or update cannot set them.
JOB_FIELDS = ("s3_available", "s3_url", "etag", S3_UPLOAD_ERROR_FIELD)
#: Object metadata of an upload's object: the dataset it is for, and its size.
DATASET_METADATA = "dcor-dataset-id"
SIZE_METADATA = "dcor-size"
#: Object metadata: the SHA-256 the client declared when it registered the upload,
#: until the s3-sha256 job has compared it with the bytes.
DECLARED_SHA256_METADATA = "dcor-declared-sha256"
#: The metadata an object uploaded with a grant keeps (the checksum job drops any other).
ISSUED_METADATA = (DATASET_METADATA, SIZE_METADATA, MD5_METADATA_KEY)
_ARTIFACT_FIELD_RE = re.compile(r"^s3_[a-z]+_(sha256|size)$")

#: Resource field that says why dclab could not read the file.
DC_ERROR_FIELD = "dc_error"
#: The prefix of the fields of a DC file's metadata (``dc:<section>:<key>``).
DC_PREFIX = "dc:"


def dc_field(section: str, key: str) -> str:
    """The resource field of one item of a DC file's metadata."""
    return f"{DC_PREFIX}{section}:{key}"


def has_dc_metadata(fields: Mapping[str, Any]) -> bool:
    """The DC metadata step recorded its result in these fields (metadata or an error)."""
    return DC_ERROR_FIELD in fields or any(k.startswith(DC_PREFIX) for k in fields)


#: The ``url_type`` of resources whose file the extension keeps.
FILE_URL_TYPES = ("upload", S3_URL_TYPE)


def is_recorded_field(name: str) -> bool:
    """Whether a resource field is one only the extension writes (``logic/rules.py``);
    ``sha256`` and ``size`` also are, once the resource holds a file."""
    return (
        name in JOB_FIELDS
        or name == DC_ERROR_FIELD
        or name.startswith(DC_PREFIX)
        or bool(_ARTIFACT_FIELD_RE.match(name))
    )


def is_dc_file(resource: Mapping[str, Any]) -> bool:
    names = (resource.get("url") or "", resource.get("name") or "")
    return any(name.lower().endswith(".rtdc") for name in names)


def download_name(resource: Mapping[str, Any]) -> str:
    """The file name a download gets: the uploaded file's, else the resource's name."""
    if resource.get("url_type") == "upload":
        name = posixpath.basename(resource.get("url") or "")
    else:
        name = resource.get("name") or ""
    return name or resource["id"]


def object_headers(resource: Mapping[str, Any]) -> dict[str, str]:
    """How a resource's object is served: under the file's name, with its mimetype.

    Stored with the object, so that a plain (unsigned) URL of a public file
    names it too.
    """
    headers = {"ContentDisposition": content_disposition(download_name(resource))}
    if resource.get("mimetype"):
        headers["ContentType"] = resource["mimetype"]
    return headers


def claimed_sha256(resource: Mapping[str, Any]) -> str | None:
    """The SHA-256 a resource states for its file (recorded before: users cannot set it,
    ``logic/rules.py``), when it is a well-formed one: an upload of the file must match it."""
    return well_formed_sha256(resource.get("sha256"))


def well_formed_sha256(value: Any) -> str | None:
    """``value`` as a SHA-256 in lower-case hex, or None when it is not one."""
    claimed = str(value or "").lower()
    return claimed if _SHA256_RE.match(claimed) else None


def recorded_object(resource: Mapping[str, Any], artifact: str) -> tuple[str, int] | None:
    """``(sha256, size)`` of the verified object a resource's fields record for an artifact."""
    if artifact == "resource":
        sha256, size = resource.get("sha256"), resource.get("size")
        if not resource.get("s3_available"):
            return None
    else:
        sha256, size = resource.get(f"s3_{artifact}_sha256"), resource.get(f"s3_{artifact}_size")
    if not sha256 or size in (None, ""):
        return None
    return str(sha256), int(size)
