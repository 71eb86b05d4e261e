"""The extension's ``ckan`` commands, one module per command family.

Each command parses its options, calls a job function (``jobs/``) or the
work behind it (``operations/``), prints what it did with a summary, and
exits 1 when anything failed. ``reference_datasets`` is ``import-figshare``.
"""

from .datasets import dcor_move_dataset_to_circle
from .migrate import dcor_migrate_resources_to_object_store
from .object_store import (
    dcor_check_object_store,
    dcor_prune_orphaned_objects,
    dcor_prune_stale_multipart_uploads,
    dcor_verify_object_store,
)
from .reference_datasets import dcor_import_figshare, import_figshare
from .resources import append_resource, dcor_list_s3_objects_for_dataset, list_all_resources
from .run_jobs import run_jobs_dcor_depot
from .worker import dcor_depot_worker

__all__ = [
    "append_resource",
    "dcor_check_object_store",
    "dcor_depot_worker",
    "dcor_import_figshare",
    "dcor_list_s3_objects_for_dataset",
    "dcor_migrate_resources_to_object_store",
    "dcor_move_dataset_to_circle",
    "dcor_prune_orphaned_objects",
    "dcor_prune_stale_multipart_uploads",
    "dcor_verify_object_store",
    "import_figshare",
    "list_all_resources",
    "run_jobs_dcor_depot",
]
