"""What dclab tells about a DC (.rtdc) file: its metadata as resource fields, its mimetype.

Used by the DC metadata job, append-resource, the figshare import and the
upload route; knows nothing of CKAN or S3 (a presigned URL is just a URL).
"""

from __future__ import annotations

import functools
import mimetypes
import numbers
from typing import Any

from rq.timeouts import BaseTimeoutException

from .resource_fields import DC_ERROR_FIELD, dc_field

#: The mimetype of DC (.rtdc) files: HDF5.
DC_MIMETYPE = "application/x-hdf5"


def read_dc_fields(path, verify: bool | str = True) -> tuple[dict[str, Any], str | None]:
    """``(fields, None)`` for a file dclab reads, else ``({DC_ERROR_FIELD: problem}, problem)``.

    ``verify``: how the certificate of an https URL is checked (as in requests:
    the default CAs, the CA bundle at a path, or not at all).
    """
    try:
        return dc_fields(str(path), verify), None
    except BaseTimeoutException:
        raise  # RQ stops the job: no verdict on the file
    except Exception as exc:  # dclab raises many kinds (OSError, KeyError, ValueError...)
        problem = f"dclab cannot read this file: {type(exc).__name__}: {exc}"
        if isinstance(verify, str):  # dclab's message quotes its request's arguments
            problem = problem.replace(verify, "<the store's CA bundle>")
        return {DC_ERROR_FIELD: problem}, problem


def dc_fields(path: str, verify: bool | str = True) -> dict[str, Any]:
    """The metadata of a DC file at a local path or a (presigned) URL."""
    import dclab
    from dclab.http_utils import session_cache
    from dclab.rtdc_dataset.fmt_http import RTDC_HTTP

    if path.startswith("https://"):
        # dclab reads a URL with GETs of its session for the URL's host. The
        # argument, not the session's attribute: requests lets REQUESTS_CA_BUNDLE
        # (set on many machines) override a session's ``verify``
        session = session_cache.get_session(path)
        session.get = functools.partial(type(session).get, session, verify=verify)
    with (
        RTDC_HTTP(path)
        if path.startswith(("http://", "https://"))
        else dclab.new_dataset(path) as ds
    ):
        fields: dict[str, Any] = {}
        for section in dclab.dfn.CFG_METADATA:
            if section in ds.config:
                for key, value in ds.config[section].items():
                    fields[dc_field(section, key)] = _json_value(value)
        fluorescence = "fluorescence" in ds.config or any(
            f.startswith("fl") for f in ds.features_innate
        )
    fields["format"] = "RT-FDC" if fluorescence else "RT-DC"
    return fields


def mimetype_for(name: str) -> str | None:
    """The mimetype of a file by its name; .rtdc files are HDF5."""
    if name.lower().endswith(".rtdc"):
        return DC_MIMETYPE
    return mimetypes.guess_type(name)[0]


def _json_value(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)
