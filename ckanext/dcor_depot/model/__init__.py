"""The tables and every query on them; no SQL outside this package.

The extension's own tables (``tables.py``), each with a module of its queries:
every file it keeps and where the verified object of each is (``dcor_depot_file``,
``depot_files.py``), the uploads it granted (``dcor_depot_upload``, ``grants.py``),
and the fixity audit's record of every copy (``dcor_depot_copy``, ``dcor_depot_check``,
``dcor_depot_audit``, ``checks.py``); the reads and writes of CKAN's own rows
(``ckan_rows.py``).

CKAN's row of a resource can vanish (``dataset_purge``; CKAN also drops the
rows of deleted resources when a dataset's resource list changes), and its
fields can be set by anyone who may edit the dataset. What the extension must
still know then is kept here, written only by its jobs and commands: which
dataset a file belonged to, in which bucket its object lies, its SHA-256, and
when CKAN lost it. Created by the plugin's migrations
(``ckan db upgrade -p dcor_depot``).
"""

from .tables import COPY_KINDS, audit_table, check_table, copy_table, file_table, upload_table

__all__ = ["COPY_KINDS", "audit_table", "check_table", "copy_table", "file_table", "upload_table"]
