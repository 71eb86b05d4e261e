"""The extension's ``ckan`` commands, one module per command family."""

from .object_store import dcor_check_object_store

__all__ = ["dcor_check_object_store"]
