"""The work behind the operator commands (``cli/``), run in a ``ckan`` process, not in a worker.

``status`` (which jobs a resource still needs: ``run-jobs-dcor-depot``),
``migrate`` (block storage to S3), ``append`` (``append-resource``),
``audit`` (the fixity audit) and ``figshare_import`` (``import-figshare``).
Like the jobs, they read and write CKAN through ``records.py``, ask
``placement.py`` where a file lives and who may read it, and move bytes with
the storage layer.
"""
