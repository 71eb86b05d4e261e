"""What RQ workers run: one module per job family, and the queueing.

Data flow: a CKAN event reaches a hook of the plugin (``plugin.py``), the hook
queues jobs here (``queue.py``) once CKAN has committed, and each job moves a
file with the storage layer (``storage/``: depot on disk, S3) and records the
result on the resource (``records.py``). The jobs: ``symlink`` (file into the
user depot), ``upload`` (verified S3 upload), ``checksum`` (SHA-256 of a file
uploaded straight to S3), ``dc_metadata``, ``visibility`` and ``backup``.
Operator commands run the same job functions in their own process.
"""
