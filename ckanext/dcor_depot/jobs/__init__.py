"""What RQ workers run: one module per job family, and the queueing.

Data flow: a CKAN event reaches a hook of the plugin (``plugin.py``), the hook
queues jobs here once CKAN has committed (``queue.py``, whose table ``JOBS`` names
every kind of job, its function and its queue), and each job moves a file with the
storage layer (``storage/``: depot on disk, S3) and records a verified object with
``verified.py`` (the extension's table, visibility, resource fields). The jobs:
``symlink`` (file into the user depot), ``upload`` (verified S3 upload),
``checksum`` (SHA-256 of a file uploaded straight to S3), ``dc_metadata``,
``backup``; of a dataset ``converge``, ``move`` and ``index``. Operator commands run
the same job functions in their own process.
"""
