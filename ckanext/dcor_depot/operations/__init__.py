"""The work behind the operator commands (``cli/``), run in a ``ckan`` process, not in a worker.

``status`` and ``catch_up`` (``run-jobs-dcor-depot``), ``sweep``, ``migrate``
(block storage to S3), ``append`` (``append-resource``), ``audit`` (the fixity
audit), ``health`` (the depot health page), ``prune``, ``circle_move`` and
``figshare_import`` (``import-figshare``); the commands only parse and print. Like
the jobs, they read and write the database through ``model/``, ask
``placement.py`` where a file lives and who may read it, follow the write rules
(``logic/rules.py``) for the ids they derive, and move bytes with the storage
layer.
"""


def human_size(size: int) -> str:
    """A size for people: bytes, KiB, MiB, GiB or TiB."""
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
