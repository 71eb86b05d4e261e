"""The storage layer: where the bytes of DCOR's files live, knowing nothing of CKAN.

``depot.py``: the human-readable depot on disk (paths, atomic move and
symlink, verified copies); ``s3/``: the circle buckets of the object store;
``figshare_api.py``: figshare's API as a read-only source of files.
Jobs and operator commands call it; it never calls them.
"""
