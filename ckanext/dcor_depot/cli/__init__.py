"""The extension's ``ckan`` commands, one module per command family."""

from .object_store import dcor_check_object_store
from .run_jobs import run_jobs_dcor_depot

__all__ = ["dcor_check_object_store", "run_jobs_dcor_depot"]
