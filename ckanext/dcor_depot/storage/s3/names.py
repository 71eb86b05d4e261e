"""Names in the object store: a circle's bucket and the key of each artifact of a resource."""

from __future__ import annotations

import re

#: Artifacts a resource can have in the object store.
ARTIFACTS = ("resource", "condensed", "preview")


_BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RESOURCE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{6,}$")


def resource_subpath(resource_id: str) -> str:
    """``RES/OUR/CEID``: where a resource's files go below a folder or key prefix."""
    if not _RESOURCE_ID_RE.match(resource_id or ""):
        raise ValueError(
            f"Invalid resource id {resource_id!r}: expected lower-case letters, "
            "digits and hyphens, at least 7 characters"
        )
    return f"{resource_id[:3]}/{resource_id[3:6]}/{resource_id[6:]}"


def object_key(artifact: str, resource_id: str) -> str:
    """The key of a resource's artifact: ``{artifact}/RES/OUR/CEID``."""
    if artifact not in ARTIFACTS:
        raise ValueError(f"Unknown artifact {artifact!r}; expected one of {', '.join(ARTIFACTS)}")
    return f"{artifact}/{resource_subpath(resource_id)}"


def parse_object_key(key: str) -> tuple[str, str] | None:
    """``(artifact, resource_id)`` of a key made by :func:`object_key`, else None."""
    artifact, _, rest = key.partition("/")
    parts = rest.split("/")
    if artifact not in ARTIFACTS or len(parts) != 3 or [len(p) for p in parts[:2]] != [3, 3]:
        return None
    resource_id = "".join(parts)
    return (artifact, resource_id) if _RESOURCE_ID_RE.match(resource_id) else None


def circle_bucket_name(template: str, organization_id: str) -> str:
    """The bucket of a circle, rendered from the bucket name template."""
    if "{organization_id}" not in template:
        raise ValueError(
            f"Bucket name template {template!r} lacks the placeholder {{organization_id}}"
        )
    try:
        name = template.format(organization_id=organization_id)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"Bucket name template {template!r} may only contain the placeholder "
            "{organization_id}"
        ) from exc
    check_bucket_name(name, f" (from template {template!r})")
    return name


def check_bucket_name(name: str, origin: str = "") -> None:
    """Raise ValueError unless ``name`` is a valid S3 bucket name."""
    if not _BUCKET_NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"Bucket name {name!r}{origin} is not a valid S3 bucket name: use 3-63 lower-case "
            "letters, digits, dots and hyphens"
        )


def circle_bucket_prefix(template: str) -> str:
    """The fixed beginning of every circle bucket's name."""
    return template.split("{organization_id}", 1)[0]
