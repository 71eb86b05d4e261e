"""Stops a process at a chosen point of its work, for tests that kill it there.

Python loads this module at start-up in every process whose PYTHONPATH holds
this folder (``tests.conftest.stop_at`` sets it for a worker or a command the
test starts). With ``DCOR_TEST_STOP_AT`` set, the process writes its pid to the
file ``DCOR_TEST_STOPPED`` and stops itself (SIGSTOP) the first time it reaches:

- ``part-file``: a write into a ``.part`` file it created (a file being copied
  into the depot, a local backup copy being written);
- ``s3-part``: the object store's answer to the first part of a multipart upload
  (a part sent, or a part copied from another object);
- ``s3-tagging``: the object store's answer to the first read of an object's tags
  (a convergence);
- ``line-look``: a converging worker's look at the circles' lines (the scan of their
  keys in Redis).

Only the first process that reaches the point stops (a work horse forked after it
does not).

A test then kills it at exactly that point, whatever the size of the file and
however fast the machine: no file large enough to be caught in time.
"""

import builtins
import os
import signal
import threading

_POINT = os.environ.get("DCOR_TEST_STOP_AT")
_stopped = threading.Event()


def _stop() -> None:
    if _stopped.is_set():
        return
    _stopped.set()
    marker = os.environ["DCOR_TEST_STOPPED"]
    if os.path.exists(marker) and open(marker).read():  # noqa: SIM115
        return  # another process (a work horse before this one) stopped there: once only
    with open(os.environ["DCOR_TEST_STOPPED"], "w") as marker:
        marker.write(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGSTOP)


class _StopsAfterFirstWrite:
    """A file object that stops the process after its first write."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        written = self._file.write(data)
        self._file.flush()
        _stop()
        return written

    def __enter__(self):
        self._file.__enter__()
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._file, name)


if _POINT == "part-file":
    _open = builtins.open

    def _open_stopping(file, mode="r", *args, **kwargs):
        opened = _open(file, mode, *args, **kwargs)
        if "x" in mode and str(file).endswith(".part") and not _stopped.is_set():
            return _StopsAfterFirstWrite(opened)
        return opened

    builtins.open = _open_stopping

elif _POINT == "s3-part":
    import botocore.client

    _call = botocore.client.BaseClient._make_api_call

    def _call_stopping(self, operation_name, api_params):
        answer = _call(self, operation_name, api_params)
        if operation_name in ("UploadPart", "UploadPartCopy"):
            _stop()
        return answer

    botocore.client.BaseClient._make_api_call = _call_stopping

elif _POINT == "s3-tagging":
    import botocore.client

    _call_tagging = botocore.client.BaseClient._make_api_call

    def _tagging_stopping(self, operation_name, api_params):
        answer = _call_tagging(self, operation_name, api_params)
        if operation_name == "GetObjectTagging":
            _stop()
        return answer

    botocore.client.BaseClient._make_api_call = _tagging_stopping

elif _POINT == "line-look":
    import redis

    _scan_iter = redis.Redis.scan_iter

    def _scan_stopping(self, match=None, *args, **kwargs):
        if match and ":line:" in str(match):
            _stop()
        return _scan_iter(self, match, *args, **kwargs)

    redis.Redis.scan_iter = _scan_stopping

elif _POINT:
    raise SystemExit(
        f"DCOR_TEST_STOP_AT={_POINT!r}: expected part-file, s3-part, s3-tagging or line-look"
    )
