"""Validators of the configuration options (named in config_declaration.yaml)
and of the extension's action input (logic/schema.py).

CKAN runs the option validators at start-up and stops with one message per
bad option, naming the option and what is expected.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from typing import Any
from urllib.parse import urlparse

import ckan.plugins.toolkit as tk

from .. import config
from ..storage.s3 import (
    MAX_OBJECT_SIZE,
    check_bucket_name,
    circle_bucket_name,
    circle_bucket_prefix,
)

ENDPOINT_KEY = "dcor_object_store.endpoint_url"
UPLOAD_KEY = "dcor_object_store.upload_access_key_id"


def dcor_depot_http_url(value: Any) -> str:
    url = urlparse(str(value))
    try:
        valid = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:  # a port that is not a number from 1 to 65535
        valid = False
    if not valid:
        raise tk.Invalid(
            f"expected an http(s) URL such as https://objectstore.example.org, got {value!r}"
        )
    if url.username or url.password:
        raise tk.Invalid(
            "the URL must not contain a user name or password; "
            "set dcor_object_store.access_key_id and .secret_access_key instead"
        )
    if url.query or url.fragment:
        raise tk.Invalid(f"the URL must not contain a query (?) or fragment (#), got {value!r}")
    return str(value)


def dcor_depot_required_with_endpoint(key, data, errors, context) -> None:
    value = data.get(key)
    if data.get((ENDPOINT_KEY,)) and not value:
        errors[key].append(f"required when {ENDPOINT_KEY} is set; set it in the ini file")


def dcor_depot_required_with_upload_key(key, data, errors, context) -> None:
    if data.get((UPLOAD_KEY,)) and not data.get(key):
        errors[key].append(f"required when {UPLOAD_KEY} is set; set it in the ini file")


def dcor_depot_staging_bucket(key, data, errors, context) -> None:
    name = str(data.get(key) or "")
    template = str(data.get(("dcor_object_store.bucket_name",)) or "circle-{organization_id}")
    try:
        check_bucket_name(name)
    except ValueError as exc:
        errors[key].append(f"{exc}; e.g. dcor-upload-staging")
        return
    if name.startswith(circle_bucket_prefix(template)):
        errors[key].append(
            f"{name!r} begins like a circle's bucket ({template}): choose a name that does not"
        )


def dcor_depot_bucket_template(value: Any) -> str:
    try:
        circle_bucket_name(str(value), str(uuid.uuid4()))
    except ValueError as exc:
        raise tk.Invalid(f"{exc}; expected e.g. circle-{{organization_id}}") from exc
    return str(value)


def dcor_depot_absolute_path(value: Any) -> str:
    if not str(value).startswith("/"):
        raise tk.Invalid(f"expected an absolute path such as /data/depots, got {value!r}")
    return os.path.normpath(str(value))


def dcor_depot_folder_name(value: Any) -> str:
    name = str(value)
    if name in (".", "..") or "/" in name or "\x00" in name or len(name) > 255:
        raise tk.Invalid(f"expected a single folder name such as users-myhost, got {value!r}")
    return name


def dcor_depot_bool(value: Any) -> bool:
    flag = config.as_bool(value)
    if flag is None:
        raise tk.Invalid(f"expected true or false, got {value!r}")
    return flag


def dcor_depot_ssl_verify(value: Any) -> bool | str:
    """true, false, or the absolute path of a readable CA bundle (PEM) to verify against."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    with contextlib.suppress(tk.Invalid):
        return dcor_depot_bool(text)
    if not text.startswith("/"):
        raise tk.Invalid(
            f"expected true, false or the absolute path of a CA bundle file, got {value!r}"
        )
    try:
        with open(text, "rb") as fd:
            head = fd.read(4096)
    except OSError as exc:
        raise tk.Invalid(
            f"the CA bundle {text} cannot be read ({exc.strerror}); give the path of a "
            "readable PEM file with the certificate(s) of the CA that signed the store's "
            "certificate, or true to use the public CAs of Python's certifi bundle"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise tk.Invalid(
            f"the CA bundle {text} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )
    return text


def dcor_depot_int_range(low: int, high: int | None = None):
    """A validator of a whole number from ``low`` to ``high`` (no upper bound when None)."""
    expected = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def validator(value: Any) -> int:
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            raise tk.Invalid(f"expected a whole number {expected}, got {value!r}")
        return value

    return validator


# validators of the action dcor_depot_upload_urls (logic/schema.py)


def dcor_depot_file_name(value: Any) -> str:
    name = str(value)
    if (
        name in (".", "..")
        or any(c in name for c in "/\\")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or len(name.encode()) > 255
    ):
        raise tk.Invalid(
            f"expected a file name without folders or control characters, at most 255 bytes, "
            f"such as cells.rtdc; got {value!r}"
        )
    return name


def dcor_depot_file_size(value: Any) -> int:
    if not isinstance(value, int) or value < 1 or value > MAX_OBJECT_SIZE:
        raise tk.Invalid(
            f"expected the file's size in bytes, from 1 to {MAX_OBJECT_SIZE} (5 TiB, the "
            f"largest S3 object); got {value!r}"
        )
    return value


def dcor_depot_md5(value: Any) -> str:
    md5 = str(value).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise tk.Invalid(f"expected the file's MD5 as 32 hexadecimal digits; got {value!r}")
    return md5


def dcor_depot_resource_id(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise tk.Invalid(
            f"expected the resource_id that dcor_depot_upload_urls returned; got {value!r}"
        ) from None
